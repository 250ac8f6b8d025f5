"""The report's judgements: the paper's three claims, CS vs. L0, the ablations, the scope and the
limitations of a run, each stated as sentences built from this run's numbers.

One rule for every verdict (:data:`VERDICT_RULE`): a comparison is yes, no or unknown; a method without a
matching ticket where the other has one loses that comparison; a comparison that cannot be made is
unknown.  Every number the sentences quote says how it was obtained: a measured ticket names its setting
and seed count, an interpolated accuracy says so and names the two measured tickets it lies between.
The writers (:mod:`cs_repro.report.markdown`) only place these sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from cs_repro.report.aggregate import (
    Aggregates,
    Group,
    Reading,
    highest_common_sparsity,
    matched_sparsity,
    read_accuracy,
)
from cs_repro.report.coverage import Hole, reading_hole, sparsest_matching_hole, suggest
from cs_repro.report.stability import Perturbations, Stability
from cs_repro.report.rows import pretty_dataset, pretty_method, pretty_network, pretty_variant
from cs_repro.report.tables import fmt_remaining

SUPPORTED = "Supported"
NOT_SUPPORTED = "Not supported"
CANNOT_JUDGE = "Cannot be judged from this run"
#: A verdict that rests on a gap in the grid or on a method at its edge (report/coverage.py's rules).
COVERAGE_VERDICT = "Cannot be judged: coverage"

#: The paper's three claims as the report states and judges them (docs/method.md, "The paper's claims",
#: lists the same sentences; a test keeps the two equal).
PAPER_CLAIMS = (
    "CS finds matching subnetworks sparser than IMP's, and at high sparsity its tickets are "
    "more accurate.",
    "CS ticket search costs fewer training epochs than IMP and is embarrassingly parallel over s0.",
    "As a pruning method (no rewinding, trained weights kept), CS beats magnitude-based pruning.",
)

#: The one rule that turns comparisons into a verdict, quoted in the report.
VERDICT_RULE = (
    "Each claim is split into comparisons, one per network (and per baseline for claim 3). A method that "
    "has no matching ticket where the other has one loses that comparison; a comparison that cannot be "
    "made (no dense run, no common sparsity, neither method matching) is unknown, and one that rests on a gap "
    "in the grid or on a method at its edge is \"coverage\" (see *Coverage*). A claim is supported when every "
    "comparison favours CS, not supported when any comparison goes against it, \"cannot be judged: "
    "coverage\" when the rest includes a coverage gap, and cannot be judged otherwise."
)

#: Where the paper makes its claims; a run elsewhere can only say what this code does there.
PAPER_SETTING = ("ResNet-20 and VGG-16 on CIFAR-10 (85 epochs per round; ResNet-50 on ImageNet for "
                 "claim 3)")
PAPER_NETWORKS = frozenset({"resnet20", "vgg16"})

#: Pruning-track methods that count as magnitude-based baselines for claim 3.
MAGNITUDE_METHODS = frozenset({"gmp", "imp", "imp_c", "magnitude_rewind", "magnitude_finetune"})

YES, NO, UNKNOWN, COVERAGE = "yes", "no", "unknown", "coverage"


@dataclass(frozen=True)
class Ablation:
    """An ablation run as its own method: the method it changes, the track it is read on, the one question
    it answers and what the answer means either way."""

    method: str
    base: str
    track: str
    question: str
    if_base_better: str
    if_ablation_not_worse: str


#: Each ablation the pipeline can run.
ABLATIONS = (
    Ablation("cs_beta1", "cs", "ticket",
             "whether annealing the temperature matters (β fixed at 1, mask thresholded after training)",
             "annealing matters: without it CS's tickets are worse",
             "annealing is not what makes CS's tickets good here"),
    Ablation("cs_released_clamp", "cs", "ticket",
             "whether the released code's clamp of the mask parameters changes CS's tickets",
             "the paper's rule gives the better tickets here",
             "the released clamp does at least as well here, so the discrepancy does not favour the paper's rule"),
    Ablation("gmp_cs_layers", "gmp", "pruning",
             "whether CS's layer-wise sparsities, handed to GMP, are what makes CS's masks good",
             "GMP with its own global budget does better, so CS's layer budgets alone do not help GMP",
             "CS's layer budgets make GMP at least as good, so part of CS's result lies in where it keeps weights"),
    # Layer budgets (reviewer 1): the pruning baselines with uniform or ERK per-layer counts instead of one
    # global ranking, at the same overall sparsities (methods/budgets.py).
    *(Ablation(f"{base}_{budget}", base, track,
               f"whether {description} instead of one global ranking change {what}",
               "one global ranking does better here",
               f"{description} do at least as well here")
      for budget, description in (("uniform", "uniform layer budgets (every layer keeps the same fraction)"),
                                  ("erk", "ERK layer budgets (Evci et al. 2020)"))
      for base, track, what in (("gmp", "pruning", "GMP"),
                                ("magnitude_finetune", "pruning", "one-shot magnitude pruning with fine-tuning"),
                                ("magnitude_rewind", "ticket", "one-shot magnitude pruning with rewinding"))),
)


def is_magnitude_method(method: str) -> bool:
    return method in MAGNITUDE_METHODS


# ---- how numbers are quoted ----------------------------------------------------------------------
def pct(fraction: float) -> str:
    return f"{fmt_remaining(fraction)}%"


def acc(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def seeds_text(n: int) -> str:
    return f"n = {n}"


def ticket_text(agg: Aggregates, group: Group) -> str:
    """'8.44% remaining [s0=0; n = 2; 0.57 points above the matching threshold]'."""
    parts = [group.setting, seeds_text(group.n_seeds)]
    dense = agg.dense(group.network)
    if dense is not None:
        margin = 100 * (group.test_acc_mean - dense.threshold)
        side = "above" if margin >= 0 else "below"
        parts.append(f"{abs(margin):.2f} points {side} the matching threshold")
    return f"{pct(group.remaining_mean)} remaining [{'; '.join(parts)}]"


def reading_text(reading: Reading) -> str:
    """A measured accuracy as it is; an interpolated one marked, with the two tickets it lies between."""
    if not reading.interpolated:
        assert reading.measured_at is not None
        if matched_sparsity(reading.measured_at, reading.level) and abs(
                reading.measured_at - reading.level) > 1e-9 * reading.level:
            return f"{acc(reading.accuracy)} (measured at {pct(reading.measured_at)})"
        return f"{acc(reading.accuracy)} (measured)"
    assert reading.below is not None and reading.above is not None
    return (f"about {acc(reading.accuracy)} (interpolated, nothing measured there: between "
            f"{acc(reading.below[1])} at {pct(reading.below[0])} and {acc(reading.above[1])} at "
            f"{pct(reading.above[0])})")


def verdict_of(statuses: list[str]) -> str:
    """:data:`VERDICT_RULE` applied to a claim's comparisons."""
    if NO in statuses:
        return NOT_SUPPORTED
    if statuses and all(s == YES for s in statuses):
        return SUPPORTED
    return COVERAGE_VERDICT if COVERAGE in statuses else CANNOT_JUDGE


def _combine(*parts: str) -> str:
    if NO in parts:
        return NO
    if all(p == YES for p in parts):
        return YES
    return COVERAGE if COVERAGE in parts else UNKNOWN


def hole_text(agg: Aggregates, hole: Hole) -> str:
    """'cannot be judged: coverage (CS's tickets jump from ... (10.9x); add s0 ≈ -0.006)'."""
    return f"cannot be judged: coverage ({hole.describe()}; {suggest(agg, hole).text()})"


# ---- claim 1: sparser matching tickets, more accurate at high sparsity ----------------------------
def compare_accuracy(agg: Aggregates, network: str, method: str, other: str,
                     track: str = "ticket") -> tuple[str, str]:
    """(status, clause): who is more accurate at the sparsest level both methods reach."""
    get = agg.ticket_points if track == "ticket" else agg.pruning_points
    pts, other_pts = get(network, method), get(network, other)
    common = highest_common_sparsity(pts, other_pts)
    a, b = pretty_method(method), pretty_method(other)
    if common is None:
        if not pts or not other_pts:
            return UNKNOWN, f"{a} and {b} cover no common sparsity"
        # the grids do not overlap: which way one of them would have to extend is a coverage question
        denser, sparser = (a, b) if min(p[0] for p in pts) > max(p[0] for p in other_pts) else (b, a)
        low = min(p[0] for p in (pts if denser == a else other_pts))
        high = max(p[0] for p in (other_pts if denser == a else pts))
        return COVERAGE, (f"{a} and {b} cover no common sparsity: cannot be judged: coverage ({denser}'s sparsest "
                          f"setting keeps {pct(low)}, {sparser}'s densest {pct(high)}; run {denser} sparser or "
                          f"{sparser} denser)")
    mine, theirs = read_accuracy(pts, common), read_accuracy(other_pts, common)
    assert mine is not None and theirs is not None
    status = YES if mine.accuracy > theirs.accuracy else NO
    clause = (f"at {pct(common)} remaining (the sparsest level both reach) {a} reaches "
              f"{reading_text(mine)} vs {reading_text(theirs)} for {b}")
    found = [h for m, r in ((method, mine), (other, theirs))
             if (h := reading_hole(agg, network, m, track, r)) is not None]
    if found:
        return COVERAGE, clause + ": " + "; ".join(hole_text(agg, h) for h in found)
    return status, clause


def ticket_comparison(agg: Aggregates, network: str, method: str,
                      other: str) -> tuple[str, str, str] | None:
    """(sparser, more accurate, clause) for two ticket-search methods on one network: whose sparsest
    matching ticket is sparser, and who is more accurate at the sparsest level both reach. None if either
    is absent."""
    if not agg.ticket_points(network, method) or not agg.ticket_points(network, other):
        return None
    a, b = pretty_method(method), pretty_method(other)
    if agg.dense(network) is None:
        sparse, text_a = UNKNOWN, "matching is undefined (no dense run)"
    else:
        m, o = agg.sparsest_matching(network, method), agg.sparsest_matching(network, other)
        if m is None and o is None:
            sparse, text_a = UNKNOWN, f"neither {a} nor {b} has a matching ticket"
        elif m is None:
            assert o is not None
            sparse, text_a = NO, f"{a} has no matching ticket while {b}'s sparsest keeps {ticket_text(agg, o)}"
        elif o is None:
            sparse, text_a = YES, f"{a}'s sparsest matching ticket keeps {ticket_text(agg, m)} while {b} has none"
        else:
            if matched_sparsity(m.remaining_mean, o.remaining_mean):
                sparse, behind = UNKNOWN, [(method, o), (other, m)]  # a tie: either may match sparser
            else:
                sparse = YES if m.remaining_mean < o.remaining_mean else NO
                # only the method that keeps more weights could change the answer by matching sparser
                behind = [(other, m)] if sparse == YES else [(method, o)]
            text_a = (f"{a}'s sparsest matching ticket keeps {ticket_text(agg, m)} vs "
                      f"{ticket_text(agg, o)} for {b}")
            found = [h for name, ahead in behind
                     if (h := sparsest_matching_hole(agg, network, name, ahead.remaining_mean)) is not None]
            if found:
                sparse = COVERAGE
                text_a += " — " + "; ".join(hole_text(agg, h) for h in found)
    accurate, text_b = compare_accuracy(agg, network, method, other)
    return sparse, accurate, f"on {pretty_network(network)}, {text_a}, and {text_b}"


def compare_tickets(agg: Aggregates, network: str, method: str, other: str) -> tuple[str, str] | None:
    """(status, clause): :func:`ticket_comparison` with both parts combined (yes only if both are yes)."""
    found = ticket_comparison(agg, network, method, other)
    if found is None:
        return None
    sparse, accurate, clause = found
    return _combine(sparse, accurate), clause


def judge_claim1(agg: Aggregates) -> tuple[str, str]:
    compared = [c for n in agg.networks() if (c := compare_tickets(agg, n, "cs", "imp")) is not None]
    verdict = verdict_of([status for status, _ in compared])
    if not compared:
        return verdict, f"{verdict}: no network has both CS and IMP tickets in this run."
    return verdict, f"{verdict}: " + "; ".join(clause for _, clause in compared) + "."


# ---- claim 2: cheaper in epochs (at matched sparsity), parallel over s0 ---------------------------
def compare_search_cost(agg: Aggregates, network: str) -> tuple[str, str] | None:
    """(status, clause): epochs to a matching ticket at the sparsest level where both CS and IMP have one."""
    cs_seq, imp_seq = agg.search_curve(network, "cs"), agg.search_curve(network, "imp")
    if cs_seq is None or imp_seq is None:
        return None
    name = pretty_network(network)
    sweep = (f"the whole CS sweep of {len(cs_seq.points)} runs costs {cs_seq.final_cost:.0f} epochs "
             "run one after another")
    if agg.dense(network) is None:
        return UNKNOWN, f"on {name}, matching is undefined (no dense run)"
    cs_m, imp_m = agg.sparsest_matching(network, "cs"), agg.sparsest_matching(network, "imp")
    if cs_m is None and imp_m is None:
        return UNKNOWN, f"on {name}, neither CS nor IMP has a matching ticket"
    if cs_m is None:
        assert imp_m is not None
        return NO, (f"on {name}, CS found no matching ticket in {cs_seq.final_cost:.0f} epochs (its whole "
                    f"sweep) while IMP reached one ({ticket_text(agg, imp_m)}) after "
                    f"{agg.cost_to_reach(imp_m):.0f} epochs")
    if imp_m is None:
        return YES, (f"on {name}, CS's matching ticket {ticket_text(agg, cs_m)} costs "
                     f"{agg.cost_to_reach(cs_m):.0f} epochs as one s0 run while IMP found none in "
                     f"{imp_seq.final_cost:.0f} epochs ({sweep})")
    level = max(cs_m.remaining_mean, imp_m.remaining_mean)
    cs_g, imp_g = agg.cheapest_matching(network, "cs", level), agg.cheapest_matching(network, "imp", level)
    assert cs_g is not None and imp_g is not None
    cs_cost, imp_cost = agg.cost_to_reach(cs_g), agg.cost_to_reach(imp_g)
    status = YES if cs_cost < imp_cost else NO
    return status, (f"on {name}, at {pct(level)} remaining or sparser (the sparsest level where both have a "
                    f"matching ticket) CS's cheapest matching ticket ({ticket_text(agg, cs_g)}) costs "
                    f"{cs_cost:.0f} epochs as one s0 run, the wall-clock cost with the sweep run in "
                    f"parallel, vs {imp_cost:.0f} epochs for IMP's ({ticket_text(agg, imp_g)}); {sweep}")


def judge_claim2(agg: Aggregates) -> tuple[str, str]:
    compared = [c for n in agg.networks() if (c := compare_search_cost(agg, n)) is not None]
    verdict = verdict_of([status for status, _ in compared])
    if not compared:
        return verdict, f"{verdict}: no network has both CS and IMP tickets in this run."
    return verdict, f"{verdict}: " + "; ".join(clause for _, clause in compared) + "."


# ---- claim 3: CS as a pruning method vs magnitude pruning ----------------------------------------
def judge_claim3(agg: Aggregates) -> tuple[str, str]:
    if not agg.has_track("pruning"):
        return CANNOT_JUDGE, f"{CANNOT_JUDGE}: the pruning track was not run in this profile."
    statuses, clauses = [], []
    for network in agg.networks():
        baselines = [m for m in agg.methods(network, "pruning") if is_magnitude_method(m)]
        if not agg.pruning_points(network, "cs") or not baselines:
            continue
        parts = []
        for method in baselines:
            status, clause = compare_accuracy(agg, network, "cs", method, track="pruning")
            statuses.append(status)
            parts.append(clause)
        clauses.append(f"on {pretty_network(network)}, " + "; ".join(parts))
    verdict = verdict_of(statuses)
    if not clauses:
        return verdict, (f"{verdict}: the pruning track holds no pair of CS and a magnitude-based "
                         "baseline on the same network.")
    return verdict, (f"{verdict} (best of pruned/fine-tuned per setting): " + "; ".join(clauses) + ".")


def judge_claims(agg: Aggregates) -> list[tuple[str, str]]:
    return [judge_claim1(agg), judge_claim2(agg), judge_claim3(agg)]


# ---- CS vs. L0 -----------------------------------------------------------------------------------
#: The variant that carries a method's result on each track (the others are controls).
MAIN_VARIANTS = {"ticket": ("rewind",), "pruning": ("pruned", "finetuned")}


def fewest_seeds(agg: Aggregates, network: str, method: str, track: str = "ticket") -> int:
    """The smallest seed count over a method's settings (its main variants only, not its controls)."""
    groups = [g for g in agg.groups if g.network == network and g.method == method and g.track == track
              and g.variant in MAIN_VARIANTS[track]]
    return min((g.n_seeds for g in groups), default=0)


L0_TOO_FEW_SEEDS = "too few seeds to draw a conclusion"
L0_CS_BETTER = "CS finds sparser matching tickets and is more accurate at the sparsest common level"
L0_CS_NOT_BETTER = "CS does not beat L0 here"
L0_COVERAGE = "cannot be judged: coverage"
L0_MIXED = "the comparison is mixed or undecided"


def cs_vs_l0_verdict(agg: Aggregates, min_seeds: int = 2) -> str | None:
    """The conclusion of CS vs. L0 (one of the L0_* phrases); None when no network has both. A conclusion
    only when both methods ran with at least ``min_seeds`` seeds."""
    compared = {n: c for n in agg.networks() if (c := compare_tickets(agg, n, "cs", "l0")) is not None}
    if not compared:
        return None
    statuses = [status for status, _ in compared.values()]
    if any(min(fewest_seeds(agg, n, "cs"), fewest_seeds(agg, n, "l0")) < min_seeds for n in compared):
        return L0_TOO_FEW_SEEDS
    if all(status == YES for status in statuses):
        return L0_CS_BETTER
    if all(status == NO for status in statuses):
        return L0_CS_NOT_BETTER
    if COVERAGE in statuses and NO not in statuses:
        return L0_COVERAGE
    return L0_MIXED


def cs_vs_l0(agg: Aggregates, stability: str = "") -> str:
    """The reviewers' question in one paragraph, with seed counts and margins; a conclusion only when
    both methods ran with at least two seeds."""
    by_network = {n: c for n in agg.networks() if (c := compare_tickets(agg, n, "cs", "l0")) is not None}
    lead = cs_vs_l0_verdict(agg)
    if lead is None:
        return "CS vs. L0: not compared; this run has no network with both CS and L0 tickets."
    networks, compared = list(by_network), list(by_network.values())
    if lead == L0_TOO_FEW_SEEDS:
        counts = {n: (fewest_seeds(agg, n, "cs"), fewest_seeds(agg, n, "l0")) for n in networks}
        lead += (" (" + "; ".join(
            f"{pretty_network(n)}: CS {seeds_text(cs_n)}, L0 {seeds_text(l0_n)} per setting"
            for n, (cs_n, l0_n) in counts.items() if min(cs_n, l0_n) < 2) + "), so the numbers are stated without one")
    text = f"CS vs. L0: {lead}{stability}: " + "; ".join(clause for _, clause in compared) + "."
    pruning = []
    for network in agg.networks():
        if agg.pruning_points(network, "cs") and agg.pruning_points(network, "l0"):
            _, clause = compare_accuracy(agg, network, "cs", "l0", track="pruning")
            pruning.append(f"on {pretty_network(network)}, {clause}")
    if pruning:
        text += " As pruning methods (trained weights, no rewinding): " + "; ".join(pruning) + "."
    costs = [search_and_spread(agg, network) for network in networks]
    text += " Search cost and run-to-run spread: " + "; ".join(costs) + "."
    return text + (" L0's gates need their own penalty sweep and optimiser settings (see README), a "
                   "tuning cost like CS's s0.")


def search_and_spread(agg: Aggregates, network: str) -> str:
    """What CS's and L0's searches cost on `network` (epochs of one search, the settings swept, seconds
    per search) and how much their tickets vary from seed to seed (mean std of test accuracy and of
    remaining weights over the settings, in points)."""
    parts = []
    for method in ("cs", "l0"):
        groups = agg.groups_for(network, method)
        if not groups:
            continue
        epochs = groups[0].search_epochs
        seconds = sum(g.search_seconds for g in groups) / len(groups)
        acc_spread = sum(100 * g.test_acc_std for g in groups) / len(groups)
        rw_spread = sum(100 * g.remaining_std for g in groups) / len(groups)
        seeds = min(g.n_seeds for g in groups)
        spread = (f"std over seeds {acc_spread:.2f} points of accuracy and {rw_spread:.2f} of remaining weights"
                  if seeds > 1 else "one seed, no spread")
        parts.append(f"{pretty_method(method)} {epochs:g} epochs ({seconds:.0f} s) per search x "
                     f"{len(groups)} settings, {spread}")
    return f"on {pretty_network(network)}, " + "; ".join(parts)


# ---- hyperparameter sensitivity ----------------------------------------------------------------------
def sensitivity_sentences(agg: Aggregates) -> list[str]:
    """Per network that ran CS's sensitivity sweep: for each hyperparameter, the range of remaining weights
    and ticket accuracy over its values; then what tuning costs in epochs."""
    sentences = []
    for network in agg.networks():
        sweep = agg.sensitivity(network)
        if not sweep:
            continue
        name = pretty_network(network)
        for knob, points in sweep.items():
            measured = [p for p in points if p.ticket is not None]
            if not measured:
                continue
            default = next((p for p in measured if p.is_default), None)
            remaining = [p.ticket.remaining_mean for p in measured]
            accuracy = [p.ticket.test_acc_mean for p in measured]
            seeds = min(p.ticket.n_seeds for p in measured)
            sentences.append(
                f"{name}, **{knob}** from {measured[0].value:g} to {measured[-1].value:g}"
                + (f" (default {default.value:g})" if default else "")
                + f": the ticket keeps {pct(min(remaining))} to {pct(max(remaining))} of the weights and reaches "
                f"{acc(min(accuracy))} to {acc(max(accuracy))} after retraining (means over {plural(seeds, 'seed')}{'' if seeds == 1 else ' or more'})"
                + (f"; at the default {pct(default.ticket.remaining_mean)} and {acc(default.ticket.test_acc_mean)}"
                   if default else "") + ".")
        runs = [p for points in sweep.values() for p in points if not p.is_default and p.ticket is not None]
        if runs:
            per_run = runs[0].ticket.search_epochs + runs[0].ticket.retrain_epochs
            seeds = min(p.ticket.n_seeds for p in runs)
            sentences.append(
                f"{name}, **cost of tuning**: {len(runs)} values besides the defaults, each one CS search and one "
                f"retraining ({per_run:g} epochs), so {len(runs) * per_run:g} epochs per seed "
                f"({len(runs) * per_run * seeds:g} for the {plural(seeds, 'seed')} here), against {per_run:g} for one run "
                "at the defaults.")
    return sentences


# ---- ablations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblationOutcome:
    """What one ablation shows on one network: ``shows`` is its conclusion (the verdict that stability
    re-judges), ``sentence`` the whole sentence without it."""

    method: str
    network: str
    shows: str
    sentence: str


ABLATION_UNDECIDED = "the numbers do not decide it"


def ablation_sentences(agg: Aggregates, stability: Mapping[tuple[str, str], str] | None = None) -> list[str]:
    """One sentence per ablation that ran: what it tests, the numbers, what they show (and how stable that is,
    keyed by (method, network))."""
    stability = stability or {}
    return [outcome.sentence.format(shows=outcome.shows, stability=stability.get((outcome.method, outcome.network), ""))
            for outcome in ablation_outcomes(agg)]


def ablation_outcomes(agg: Aggregates) -> list[AblationOutcome]:
    """Every ablation that ran, per network: its conclusion and its sentence."""
    sentences = []
    for ablation in ABLATIONS:
        for network in agg.networks():
            if ablation.method not in agg.methods(network, ablation.track):
                continue
            name, base = pretty_method(ablation.method), pretty_method(ablation.base)
            n = fewest_seeds(agg, network, ablation.method, ablation.track)
            if ablation.track == "ticket":
                compared = ticket_comparison(agg, network, ablation.base, ablation.method)
                if compared is None:
                    continue
                sparse, accurate, clause = compared
                clause = clause.removeprefix(f"on {pretty_network(network)}, ")  # the sentence names it already
                parts = {"keeps fewer weights in its sparsest matching ticket": sparse,
                         "is more accurate at the sparsest level both reach": accurate}
            else:
                if not agg.pruning_points(network, ablation.base):
                    continue
                accurate, clause = compare_accuracy(agg, network, ablation.base, ablation.method, "pruning")
                parts = {"is more accurate at the sparsest level both reach": accurate}
            statuses = set(parts.values())
            decided = {what: status for what, status in parts.items() if status in (YES, NO)}
            if statuses == {YES}:
                shows = ablation.if_base_better
            elif statuses == {NO}:
                shows = ablation.if_ablation_not_worse
            elif UNKNOWN in statuses or not decided:
                shows = ABLATION_UNDECIDED if UNKNOWN in statuses else "cannot be judged: coverage"
            elif COVERAGE in statuses:
                what, status = next(iter(decided.items()))
                shows = (f"only part of it can be judged (the rest is coverage): that {base} {what} is "
                         f"{'true' if status == YES else 'false'}")
            else:
                wins = [what for what, status in parts.items() if status == YES]
                losses = [what for what, status in parts.items() if status == NO]
                shows = (f"the result is mixed: {base} " + " and ".join(wins) + ", while the ablation "
                         + " and ".join(losses))
            caution = " One seed: indicative only." if n < 2 else ""
            clause = clause.replace("{", "{{").replace("}", "}}")
            sentences.append(AblationOutcome(
                ablation.method, network, shows,
                f"**{name}** on {pretty_network(network)} tests {ablation.question}: {clause}; "
                f"**{{shows}}**{{stability}}.{caution}"))
    return sentences


# ---- every verdict with its stability ----------------------------------------------------------------
@dataclass(frozen=True)
class Judged:
    """One verdict of the report (a claim, CS vs. L0, an ablation) and how stable it is."""

    key: str  # claim1, claim2, claim3, cs_vs_l0, ablation:<method>:<network>
    verdict: str
    stability: Stability


def judge_everything(agg: Aggregates) -> list[Judged]:
    """Every verdict the report states, each re-judged under :data:`STABILITY_RULE`'s perturbations."""
    perturbed = Perturbations(agg)
    judged = []
    claim_methods = ({"cs", "imp"}, {"cs", "imp"},
                     {"cs"} | {m for n in agg.networks() for m in agg.methods(n, "pruning") if is_magnitude_method(m)})
    for i, (judge, methods) in enumerate(zip((judge_claim1, judge_claim2, judge_claim3), claim_methods), start=1):
        stability = perturbed.stability(lambda a, judge=judge: judge(a)[0], methods)
        judged.append(Judged(f"claim{i}", stability.verdict, stability))
    verdict = cs_vs_l0_verdict(agg)
    if verdict is not None:
        # the two-seed gate would answer every one-seed re-judgement with "too few seeds"
        stability = perturbed.stability(cs_vs_l0_verdict, {"cs", "l0"}, rejudge=lambda a: (
            verdict if verdict == L0_TOO_FEW_SEEDS else cs_vs_l0_verdict(a, min_seeds=1)))
        judged.append(Judged("cs_vs_l0", stability.verdict, stability))
    def outcome_of(rows: Aggregates, method: str, network: str) -> str | None:
        return next((o.shows for o in ablation_outcomes(rows) if (o.method, o.network) == (method, network)), None)

    for outcome in ablation_outcomes(agg):
        base = next(a.base for a in ABLATIONS if a.method == outcome.method)
        stability = perturbed.stability(
            lambda a, o=outcome: outcome_of(a, o.method, o.network), {base, outcome.method})
        judged.append(Judged(f"ablation:{outcome.method}:{outcome.network}", stability.verdict, stability))
    return judged


def verdicts_summary(judged: list[Judged]) -> dict[str, dict[str, str]]:
    """``metrics/verdicts.json``: per verdict, the verdict, "stable" or "fragile", and what flips it."""
    return {j.key: {"verdict": j.verdict, "stability": "fragile" if j.stability.fragile else "stable",
                    "flipped_by": "; ".join(what for what, _ in j.stability.flips)} for j in judged}


def stability_note(judged: Judged) -> str:
    """' (fragile: leaving out seed 1 makes it "Supported")' / ' (stable: ...)' for a verdict's sentence."""
    return f" ({judged.stability.text()})"


# ---- scope and limitations -----------------------------------------------------------------------
#: What a CS ticket is under each cs.mask_scale (docs/method.md, "What a CS ticket is").
TICKET_DEFINITION_TEXT = {
    "binary": "the binary mask times the rewound weights, as the paper's text defines them",
    "released": "retrained as the released code does, the mask times 1/sigmoid(s0) in every forward pass",
    "folded": "the rewound weights times 1/sigmoid(s0) once (the scale the search trained them under), then a plain "
              "binary mask",
}


def scope_sentence(agg: Aggregates, meta: Mapping[str, Any]) -> str:
    """Where this run's verdicts come from, next to where the paper's come from."""
    parts = []
    for network in agg.networks():
        dense = [g for g in agg.groups if g.network == network and g.method == "dense"]
        epochs = f", {dense[0].search_epochs:.0f} training epochs per run" if dense else ""
        parts.append(f"{pretty_network(network)} on {pretty_dataset(agg.dataset(network))}{epochs}")
    seeds = meta.get("seeds")
    seed_text = (f"{plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))})"
                 if isinstance(seeds, list) else "seeds not recorded")
    text = (f"**Scope.** These verdicts come from the {meta.get('profile', 'unnamed')} profile: "
            f"{'; '.join(parts)}; {seed_text}. The paper's claims are made on {PAPER_SETTING}.")
    definition = meta.get("cs_ticket_definition")
    if definition in TICKET_DEFINITION_TEXT:
        text += f" CS's tickets are {TICKET_DEFINITION_TEXT[definition]} (cs.mask_scale: {definition})."
    if set(agg.networks()) <= PAPER_NETWORKS:
        return text + " This run uses the paper's networks, so its verdicts bear on the paper directly."
    return text + (" So the verdicts say what this code finds on these networks; they neither confirm nor "
                   "refute the paper's numbers, only whether its claims carry over here.")


def limitations(agg: Aggregates, meta: Mapping[str, Any], verdicts: list[tuple[str, str]]) -> list[str]:
    """The Limitations section: exact sparsity, tuning cost, what the run can say, where it disagrees."""
    items = []
    landed = []
    for network in agg.networks():
        groups = agg.groups_for(network, "cs")
        if groups:
            landed.append(f"{pretty_network(network)}: " + ", ".join(
                f"{pct(g.remaining_mean)} [{g.setting}]" for g in sorted(groups, key=lambda g: -g.remaining_mean)))
    if landed:
        items.append("**CS cannot hit an exact sparsity.** Its sparsity is an outcome of s0 (and λ, β_T), "
                     "not a target; this run's CS tickets landed at " + "; ".join(landed) + ". Comparisons "
                     "at a given sparsity therefore use the nearest measured ticket or an interpolation, "
                     "marked as such wherever it appears.")
    costs = []
    for network in agg.networks():
        curve = agg.search_curve(network, "cs")
        if curve is not None:
            costs.append(f"{pretty_network(network)}: {len(curve.points)} s0 values, "
                         f"{curve.final_cost:.0f} epochs per seed")
    l0 = [f"{pretty_network(n)}: {len(agg.groups_for(n, 'l0'))} penalties" for n in agg.networks()
          if agg.groups_for(n, "l0")]
    swept = [pretty_network(n) for n in agg.networks() if agg.sensitivity(n)]
    if swept:
        others = "λ, β_T and weight decay were swept one at a time on " + ", ".join(swept) + " (section *CS's " \
                 "hyperparameter sensitivity*) and fixed at the profile's values everywhere else."
    else:
        others = ("λ, β_T and weight decay were fixed at the profile's values, not searched, so their "
                  "sensitivity is not measured by this run (the `extended` profile sweeps them).")
    if costs:
        items.append("**CS's hyperparameters must be searched, and that costs training.** The s0 sweep "
                     "(search and retraining) cost " + "; ".join(costs) + ". " + others
                     + (" L0 needs the same kind of sweep (" + "; ".join(l0) + ")." if l0 else ""))
    single = sorted({pretty_method(g.method) if g.variant in MAIN_VARIANTS[g.track]
                     else f"{pretty_method(g.method)} ({pretty_variant(g.variant)} control)"
                     for g in agg.groups if g.n_seeds < 2 and g.method != "dense"})
    seeds = meta.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) else None
    text = ("**What this run can say.** "
            + (f"With {plural(n_seeds, 'seed')}, " if n_seeds else "")
            + "a difference smaller than the spread over seeds is not a result, and the matching rule "
            "depends on the dense network's spread over the same seeds.")
    if single:
        text += (" These methods ran with one seed (n = 1) for at least one setting, so their numbers "
                 "carry no spread: " + ", ".join(single) + ".")
    items.append(text)
    against = [f"claim {i} ({verdict.lower()})" for i, (verdict, _) in enumerate(verdicts, start=1)
               if verdict != SUPPORTED]
    if against:
        items.append("**Where this run does not support the paper:** " + ", ".join(against)
                     + "; the sentences under Claims give the numbers.")
    else:
        items.append("**Where this run does not support the paper:** nowhere; every claim is supported here.")
    return items
