"""``figures/REPORT.md``: provenance and rules, every figure and table, the scope, the paper's three claims
judged from this run's numbers, CS vs. L0, the ablations and the limitations.  The judging lives in
:mod:`cs_repro.report.claims`; this module only places it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from cs_repro.report.aggregate import (
    MATCHED_SPARSITY_RULE,
    MATCHING_RULE,
    SEARCH_COST_RULE,
    STD_RULE,
    Aggregates,
)
from cs_repro.report.claims import (
    PAPER_CLAIMS,
    VERDICT_RULE,
    Judged,
    ablation_sentences,
    cs_vs_l0,
    judge_claims,
    judge_everything,
    limitations,
    scope_sentence,
    sensitivity_sentences,
    stability_note,
)
from cs_repro.report.coverage import COVERAGE_RULE, EDGE_RULE, every_hole, exp_run_commands
from cs_repro.report.rows import pretty_network
from cs_repro.report.stability import STABILITY_RULE
from cs_repro.report.captions import FIGURE_CAPTIONS
from cs_repro.report.rows import NOT_RECORDED, Row, normalise_meta
from cs_repro.report.tables import make_tables, provenance, to_markdown


# ---- the report ------------------------------------------------------------------------------
def write_report(rows: Iterable[Row | Mapping[str, Any]] | Aggregates,
                 meta: Mapping[str, Any] | None, out_dir: Path,
                 show_optional: bool = False, judged: list[Judged] | None = None) -> Path:
    """Write ``out_dir/REPORT.md``; embeds the figures already saved in ``out_dir``. ``judged``: every verdict
    with its stability (`judge_everything`), when the caller has it already."""
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
        f"- **Matched sparsity.** {MATCHED_SPARSITY_RULE}",
        f"- **Verdicts.** {VERDICT_RULE}",
        f"- **Coverage.** {COVERAGE_RULE}",
        f"- **Edge.** {EDGE_RULE}",
        f"- **Stability.** {STABILITY_RULE}",
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
    verdicts = judge_claims(agg)
    judged_by_key = {j.key: j for j in (judge_everything(agg) if judged is None else judged)}
    lines += ["## Claims", "", scope_sentence(agg, meta), "",
              "Each claim of the paper, then one sentence judged from this run's numbers, and whether the "
              "verdict survives leaving out one seed or one setting (*Stability* above).", ""]
    for i, (claim, (verdict, sentence)) in enumerate(zip(PAPER_CLAIMS, verdicts), start=1):
        lines += [f"{i}. *{claim}*", "", f"   **{verdict}**{sentence[len(verdict):]}", "",
                  f"   *Stability:* {judged_by_key[f'claim{i}'].stability.text()}.", ""]
    lines += ["## CS vs. L0 (the reviewers' question)", "",
              cs_vs_l0(agg, stability_note(judged_by_key["cs_vs_l0"]) if "cs_vs_l0" in judged_by_key else ""), ""]
    sensitivity = sensitivity_sentences(agg)
    if sensitivity:
        lines += ["## CS's hyperparameter sensitivity (the reviewers' question)", "",
                  "One hyperparameter changed at a time (figure *sensitivity*, table *sensitivity*):", ""]
        lines += [f"- {sentence}" for sentence in sensitivity] + [""]
    ablations = ablation_sentences(agg, {tuple(key.split(":")[1:]): stability_note(j)
                                         for key, j in judged_by_key.items() if key.startswith("ablation:")})
    if ablations:
        lines += ["## Ablations", ""] + [f"- {sentence}" for sentence in ablations] + [""]
    lines += coverage_section(agg)
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations(agg, meta, verdicts)] + [""]
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


def coverage_section(agg: Aggregates) -> list[str]:
    """Every gap and edge in this run's grids, with the settings that would fill it and one command for all."""
    found = every_hole(agg)
    lines = ["## Coverage", ""]
    if not found:
        return lines + [f"No method's grid has a gap wider than the rule allows, and no method still matches at its "
                        "sparsest setting.", ""]
    lines += ["Where this run's grids leave gaps or stop at a method's edge (*Coverage* and *Edge* above). A "
              "verdict that rests on one of these says so; the others do not depend on them. The suggested values "
              "are interpolated between the two settings, which assumes the sparsity moves smoothly between them: "
              "CS's does not always (on LeNet-5 it jumps from ~32% at s0 = 0.00001 to ~5.5% at s0 = 0, so no s0 "
              "fills that gap: change λ or β_T there). Run them, and this section says what is left.", ""]
    for hole, suggestion in found:
        lines.append(f"- {pretty_network(hole.network)}: {hole.describe()}; {suggestion.text()}.")
    commands = exp_run_commands(agg, found)
    if commands:
        lines += ["", "To fill them all (`cs-repro suggest-settings` prints the same):", "", "```bash",
                  *commands, "```"]
    return lines + [""]


# ---- the README's results block --------------------------------------------------------------------
README_BEGIN = "<!-- results:begin (written by `make readme` from metrics/results.json; do not edit by hand) -->"
README_END = "<!-- results:end -->"


def results_block(rows: Iterable[Row | Mapping[str, Any]] | Aggregates, meta: Mapping[str, Any] | None) -> str:
    """The README's results: provenance, each method's sparsest matching ticket per network (the ablations
    and controls stay in REPORT.md), and the three verdicts with the run's scope."""
    from cs_repro.report.rows import pretty_dataset, pretty_method, pretty_network
    from cs_repro.report.tables import fmt_acc, fmt_epochs, fmt_group_acc, fmt_remaining

    agg = rows if isinstance(rows, Aggregates) else Aggregates(rows)
    meta = normalise_meta(meta)
    methods = agg.headline_methods()
    lines = [README_BEGIN, "", provenance(meta) + " Every table, figure and claim sentence of this run: "
             "[figures/REPORT.md](figures/REPORT.md).", "",
             "| Network | Dense: test acc. (%) | " + " | ".join(pretty_method(m) for m in methods) + " |",
             "|---|---:|" + "---|" * len(methods)]
    for network in agg.networks():
        dense = agg.dense(network)
        cells = [f"{pretty_network(network)} ({pretty_dataset(agg.dataset(network))})",
                 "—" if dense is None else fmt_acc(dense.test_acc_mean, dense.test_acc_std, dense.n_seeds)]
        for method in methods:
            best = agg.best_ticket(network, method)
            match = agg.sparsest_matching(network, method)
            if best is None:
                cells.append("not run")
            elif match is None:
                cells.append(f"no matching ticket (best: {fmt_group_acc(best)} at "
                             f"{fmt_remaining(best.remaining_mean)}% [{best.setting}])")
            else:
                cells.append(f"{fmt_remaining(match.remaining_mean)}% remaining, {fmt_group_acc(match)} "
                             f"[{match.setting}], {fmt_epochs(agg.cost_to_reach(match))} epochs")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each cell: the method's sparsest matching ticket (remaining weights, test accuracy as mean ± "
              "sample std over seeds with n = seeds, its setting, and the training epochs it cost, retraining "
              f"included). {MATCHING_RULE}", ""]
    verdicts = judge_claims(agg)
    lines += [scope_sentence(agg, meta), ""]
    judged = {j.key: j for j in judge_everything(agg)}
    lines += [f"{i}. *{claim}* **{verdict}.** ({'fragile' if judged[f'claim{i}'].stability.fragile else 'stable'}; "
              "REPORT.md says what flips it)" if judged[f'claim{i}'].stability.fragile else
              f"{i}. *{claim}* **{verdict}.** (stable)"
              for i, (claim, (verdict, _)) in enumerate(zip(PAPER_CLAIMS, verdicts), start=1)]
    lines += ["", README_END]
    return "\n".join(lines)


def replace_results_block(readme: str, block: str) -> str:
    """``readme`` with its results block (between the markers) replaced by ``block``."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < start:
        from cs_repro.errors import UserError

        raise UserError(f"the README has no results block: add the lines {README_BEGIN!r} and {README_END!r}")
    return readme[:start] + block + readme[end + len(README_END):]
