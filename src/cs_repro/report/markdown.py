"""``figures/REPORT.md``: every figure and table with provenance, then the paper's three claims,
each judged from this run's numbers (supported / not supported / cannot be judged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from cs_repro.report.aggregate import (
    MATCHING_RULE,
    SEARCH_COST_RULE,
    STD_RULE,
    Aggregates,
    highest_common_sparsity,
    interpolate_accuracy,
)
from cs_repro.report.figures import FIGURE_CAPTIONS
from cs_repro.report.rows import (
    NOT_RECORDED,
    Row,
    normalise_meta,
    pretty_method,
    pretty_network,
)
from cs_repro.report.tables import fmt_remaining, make_tables, provenance, to_markdown

SUPPORTED = "Supported"
NOT_SUPPORTED = "Not supported"
CANNOT_JUDGE = "Cannot be judged from this run"

#: The paper's three claims as the report states and judges them (docs/method.md, "The paper's claims",
#: lists the same sentences; a test keeps the two equal).
PAPER_CLAIMS = (
    "CS finds matching subnetworks sparser than IMP's, and at high sparsity its tickets are "
    "more accurate.",
    "CS ticket search costs fewer training epochs than IMP and is embarrassingly parallel over s0.",
    "As a pruning method (no rewinding, trained weights kept), CS beats magnitude-based pruning.",
)

#: Pruning-track methods that count as magnitude-based baselines for claim 3.
MAGNITUDE_METHODS = frozenset({"gmp", "imp", "imp_c", "omp", "magnitude", "magnitude_rewind",
                               "magnitude_finetune"})

_YES, _NO, _UNKNOWN = "yes", "no", "unknown"


def is_magnitude_method(method: str) -> bool:
    return method in MAGNITUDE_METHODS or "magnitude" in method


def _pct(fraction: float) -> str:
    return f"{fmt_remaining(fraction)}%"


def _acc(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _overall(statuses: list[str]) -> str:
    if not statuses or all(s == _UNKNOWN for s in statuses):
        return CANNOT_JUDGE
    if _NO in statuses:
        return NOT_SUPPORTED
    if all(s == _YES for s in statuses):
        return SUPPORTED
    return CANNOT_JUDGE


def _combine(*parts: str) -> str:
    if _NO in parts:
        return _NO
    return _YES if all(p == _YES for p in parts) else _UNKNOWN


# ---- claim 1: sparser matching tickets, more accurate at high sparsity ---------------------
def compare_tickets(agg: Aggregates, network: str, method: str, other: str) -> tuple[str, str] | None:
    """(status, clause) comparing two ticket-search methods on one network: whose sparsest matching
    ticket is sparser, and who is more accurate at the sparsest level both reach. None if either is absent."""
    pts, other_pts = agg.ticket_points(network, method), agg.ticket_points(network, other)
    if not pts or not other_pts:
        return None
    a, b = pretty_method(method), pretty_method(other)
    if agg.dense(network) is None:
        sparse, text_a = _UNKNOWN, "matching is undefined (no dense run)"
    else:
        m, o = agg.sparsest_matching(network, method), agg.sparsest_matching(network, other)
        if m is None and o is None:
            sparse, text_a = _UNKNOWN, f"neither {a} nor {b} has a matching ticket"
        elif m is None:
            sparse = _NO
            text_a = f"{a} has no matching ticket while {b}'s sparsest keeps {_pct(o.remaining_mean)}"
        elif o is None:
            sparse = _YES
            text_a = f"{a}'s sparsest matching ticket keeps {_pct(m.remaining_mean)} while {b} has none"
        else:
            sparse = _YES if m.remaining_mean < o.remaining_mean else _NO
            text_a = (f"{a}'s sparsest matching ticket keeps {_pct(m.remaining_mean)} of the "
                      f"weights vs {_pct(o.remaining_mean)} for {b}")
    common = highest_common_sparsity(pts, other_pts)
    if common is None:
        accurate, text_b = _UNKNOWN, "their sparsity ranges do not overlap"
    else:
        acc, other_acc = interpolate_accuracy(pts, common), interpolate_accuracy(other_pts, common)
        assert acc is not None and other_acc is not None
        accurate = _YES if acc > other_acc else _NO
        text_b = (f"at {_pct(common)} remaining (the sparsest level both reach) {a} reaches "
                  f"{_acc(acc)} vs {_acc(other_acc)} for {b}")
    return _combine(sparse, accurate), f"on {pretty_network(network)}, {text_a}, and {text_b}"


def judge_claim1(agg: Aggregates) -> tuple[str, str]:
    compared = [c for n in agg.networks() if (c := compare_tickets(agg, n, "cs", "imp")) is not None]
    verdict = _overall([status for status, _ in compared])
    if not compared:
        return verdict, f"{verdict}: no network has both CS and IMP tickets in this run."
    return verdict, f"{verdict}: " + "; ".join(clause for _, clause in compared) + "."


def cs_vs_l0(agg: Aggregates) -> str:
    """The reviewers' question in one paragraph: does CS beat L0 regularisation, in this run's numbers?"""
    compared = [c for n in agg.networks() if (c := compare_tickets(agg, n, "cs", "l0")) is not None]
    if not compared:
        return "CS vs. L0: not compared; this run has no network with both CS and L0 tickets."
    statuses = [status for status, _ in compared]
    if all(status == _YES for status in statuses):
        lead = "CS finds sparser matching tickets and is more accurate at the sparsest common level"
    elif all(status == _NO for status in statuses):
        lead = "CS does not beat L0 here"
    else:
        lead = "the comparison is mixed or undecided"
    text = f"CS vs. L0: {lead}: " + "; ".join(clause for _, clause in compared) + "."
    pruning = []
    for network in agg.networks():
        cs_pts, l0_pts = agg.pruning_points(network, "cs"), agg.pruning_points(network, "l0")
        common = highest_common_sparsity(cs_pts, l0_pts) if cs_pts and l0_pts else None
        if common is not None:
            cs_acc, l0_acc = interpolate_accuracy(cs_pts, common), interpolate_accuracy(l0_pts, common)
            pruning.append(f"on {pretty_network(network)} at {_pct(common)} remaining, CS {_acc(cs_acc)} vs L0 {_acc(l0_acc)}")
    if pruning:
        text += " As pruning methods (trained weights, no rewinding): " + "; ".join(pruning) + "."
    return text + " L0's gates need their own lambda sweep and optimiser settings (see README), a tuning cost like CS's s0."


# ---- claim 2: cheaper in epochs, parallel over s0 --------------------------------------------
def judge_claim2(agg: Aggregates) -> tuple[str, str]:
    statuses, clauses = [], []
    for network in agg.networks():
        cs_seq = agg.search_curve(network, "cs", "sequential")
        imp_seq = agg.search_curve(network, "imp", "sequential")
        if cs_seq is None or imp_seq is None:
            continue
        name = pretty_network(network)
        cs_m, imp_m = agg.sparsest_matching(network, "cs"), agg.sparsest_matching(network, "imp")
        if cs_m is None:
            why = "no dense run" if agg.dense(network) is None else "CS has no matching ticket"
            statuses.append(_UNKNOWN)
            clauses.append(f"on {name}, {why}")
            continue
        cs_cost = agg.cost_to_reach(cs_m)
        text = (f"on {name}, CS's sparsest matching ticket ({_pct(cs_m.remaining_mean)} "
                f"remaining) costs {cs_cost:.0f} epochs as one s0 run (the wall-clock cost with "
                f"the sweep run in parallel; the whole sweep of {len(cs_seq.points)} runs costs "
                f"{cs_seq.final_cost:.0f} epochs run sequentially)")
        if imp_m is None:
            spent = imp_seq.final_cost
            status = _YES if cs_cost < spent else _UNKNOWN
            text += f" while IMP found no matching ticket in {spent:.0f} epochs"
        else:
            imp_cost = agg.cost_to_reach(imp_m)
            status = _YES if cs_cost < imp_cost else _NO
            text += (f" vs {imp_cost:.0f} epochs for IMP's sparsest matching ticket "
                     f"({_pct(imp_m.remaining_mean)} remaining)")
        statuses.append(status)
        clauses.append(text)
    verdict = _overall(statuses)
    if not clauses:
        return verdict, f"{verdict}: no network has both CS and IMP tickets in this run."
    return verdict, f"{verdict}: " + "; ".join(clauses) + "."


# ---- claim 3: CS as a pruning method vs magnitude pruning ----------------------------------
def judge_claim3(agg: Aggregates) -> tuple[str, str]:
    if not agg.has_track("pruning"):
        return CANNOT_JUDGE, f"{CANNOT_JUDGE}: the pruning track was not run in this profile."
    statuses, clauses = [], []
    for network in agg.networks():
        cs_pts = agg.pruning_points(network, "cs")
        baselines = [m for m in agg.methods(network, "pruning") if is_magnitude_method(m)]
        if not cs_pts or not baselines:
            continue
        parts = []
        for method in baselines:
            pts = agg.pruning_points(network, method)
            common = highest_common_sparsity(cs_pts, pts)
            if common is None:
                statuses.append(_UNKNOWN)
                parts.append(f"CS and {pretty_method(method)} cover no common sparsity")
                continue
            a_cs, a_b = interpolate_accuracy(cs_pts, common), interpolate_accuracy(pts, common)
            assert a_cs is not None and a_b is not None
            statuses.append(_YES if a_cs > a_b else _NO)
            parts.append(f"at {_pct(common)} remaining CS reaches {_acc(a_cs)} vs {_acc(a_b)} for "
                         f"{pretty_method(method)}")
        clauses.append(f"on {pretty_network(network)}, " + ", ".join(parts))
    verdict = _overall(statuses)
    if not clauses:
        return verdict, (f"{verdict}: the pruning track holds no pair of CS and a magnitude-based "
                         "baseline on the same network.")
    return verdict, (f"{verdict} (best of pruned/fine-tuned per setting, at the sparsest level "
                     "both reach): " + "; ".join(clauses) + ".")


def judge_claims(agg: Aggregates) -> list[tuple[str, str]]:
    return [judge_claim1(agg), judge_claim2(agg), judge_claim3(agg)]


# ---- the report ------------------------------------------------------------------------------
def write_report(rows: Iterable[Row | Mapping[str, Any]] | Aggregates,
                 meta: Mapping[str, Any] | None, out_dir: Path,
                 show_optional: bool = False) -> Path:
    """Write ``out_dir/REPORT.md``; embeds the figures already saved in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = rows if isinstance(rows, Aggregates) else Aggregates(rows)
    meta = normalise_meta(meta)
    prov = provenance(meta)
    lines = [
        "# Report: Winning the Lottery with Continuous Sparsification (reproduction)",
        "",
        prov,
        "",
        f"- **Matching rule.** {MATCHING_RULE}",
        f"- **Spread.** {STD_RULE}.",
        f"- **Search cost.** {SEARCH_COST_RULE}",
        f"- **Optional lines** (IMP-C, reinit and random-mask controls) are "
        f"{'shown' if show_optional else 'hidden'} in the figures.",
    ]
    recorded = meta.get("matching_rule")
    if recorded not in (None, NOT_RECORDED, MATCHING_RULE):
        lines.append(f"- The pipeline's meta records this matching rule: \"{recorded}\"; the "
                     "report applies the rule above.")
    lines += ["", "## Figures", ""]
    number = 0
    for name, caption in FIGURE_CAPTIONS.items():
        if (out_dir / f"{name}.png").is_file():
            number += 1
            lines += [f"![{name}]({name}.png)", "",
                      f"*Figure {number} ({name}).* {caption} {prov} [PDF]({name}.pdf)", ""]
        else:
            lines += [f"*{name}: not drawn; this run has no rows for it.*", ""]
    lines += ["## Tables", ""]
    for table in make_tables(agg, meta):
        lines += [to_markdown(table), ""]
    lines += ["## Claims", "",
              "Each claim of the paper, then one sentence judged from this run's numbers.", ""]
    for i, (claim, (verdict, sentence)) in enumerate(
            zip(PAPER_CLAIMS, judge_claims(agg)), start=1):
        lines += [f"{i}. *{claim}*", "", f"   **{verdict}**{sentence[len(verdict):]}", ""]
    lines += ["## CS vs. L0 (the reviewers' question)", "", cs_vs_l0(agg), ""]
    collapsed = meta.get("collapsed_runs")
    if isinstance(collapsed, list) and collapsed:
        lines += ["## Runs that collapsed", "",
                  f"{len(collapsed)} run(s) fell back to chance accuracy after having learned (the network died). "
                  "Their results stay in the tables and figures as recorded: for a search, the mask frozen when "
                  "training died. Read those points with care.", ""]
        lines += [f"- {run}" for run in collapsed] + [""]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
