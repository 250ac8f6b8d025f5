"""Aggregation over seeds, the matching rule, and search cost — each defined here and only here.

Groups: rows with the same (network, track, method, variant, setting) are one group; its numbers
are the mean and the **sample** standard deviation (ddof = 1) over seeds, with std = 0 for a
single seed.  (Track is part of the key only to keep the two tracks apart; the contract already
gives them different variants.)

Matching: see :data:`MATCHING_RULE`; :func:`is_matching` is the only place it is applied.

Search cost: see :data:`SEARCH_COST_RULE`; :meth:`Aggregates.cost_to_reach` and
:meth:`Aggregates.search_curve` are the only places it is computed.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from cs_repro.methods import ABLATION_METHODS
from cs_repro.report.rows import Row, as_rows, pretty_method

#: How a spread over seeds is computed, quoted in captions.
STD_RULE = "mean ± sample standard deviation over seeds (ddof = 1; 0 for a single seed)"

#: The one definition of a matching subnetwork used by the report, its tables and the README.
MATCHING_RULE = (
    "A ticket is matching when its mean test accuracy over seeds, retrained from the rewind "
    "point, is at least the dense network's mean test accuracy minus one standard deviation of "
    "the dense test accuracy over seeds (sample standard deviation, ddof = 1; 0 for a single seed)."
)

#: Slack for floating-point round-off in the matching comparison (accuracies are fractions).
MATCH_EPS = 1e-9

#: Two tickets are at matched sparsity when their remaining weights differ by at most this fraction
#: (relative): CS cannot hit a sparsity exactly, so exact equality would almost never happen.
MATCHED_SPARSITY_TOLERANCE = 0.05

#: How the report compares two methods at one sparsity, quoted in the report.
MATCHED_SPARSITY_RULE = (
    "Comparisons at one sparsity use a measured ticket when the method has one whose remaining weights "
    f"are within {MATCHED_SPARSITY_TOLERANCE:.0%} (relative) of that level; otherwise the accuracy is "
    "interpolated linearly in log(remaining weights) between the method's two nearest measured tickets, "
    "and the report says so and names both."
)

#: The one definition of search cost used by the tables, the search-cost figure and the claims.
SEARCH_COST_RULE = (
    "Search cost is the training epochs (or wall-clock seconds) spent to produce a ticket, plus "
    "the retraining from the rewind point that measures its accuracy. For IMP the training of "
    "level l is exactly the retraining of the level-l ticket, so its recorded search epochs "
    "((l+1)·E) are used as they are. Methods whose settings are levels of one search (IMP, IMP-C) "
    "accumulate along the levels; other methods (CS over s0, L0, ...) run one independent search "
    "per setting: run one after another their costs add up (sequential), run side by side the "
    "wall-clock cost is that of the longest single run (parallel). Retraining seconds are not "
    "recorded, so they are estimated as retrain epochs × the search's seconds per epoch."
)

#: Methods whose recorded search cost already contains the retraining of the ticket.
SEARCH_INCLUDES_RETRAIN = frozenset({"imp"})
#: Methods whose settings are successive levels of ONE sequential search.
CHAIN_METHODS = frozenset({"imp", "imp_c"})

#: Preferred order of methods in figures and tables; others follow alphabetically.
METHOD_ORDER = ("dense", "cs", "imp", "l0", "imp_c", "gmp", "magnitude_rewind",
                "magnitude_finetune")


#: Preferred order of variants (main result first, then controls).
VARIANT_ORDER = ("rewind", "pruned", "finetuned", "reinit", "random")

#: A `cs_sensitivity` row's setting (methods/cs_sensitivity.py): the changed value, the profile's own value
#: and the s0 of the search, e.g. "beta_final=50 (default 200, s0=0)".
SENSITIVITY_SETTING = re.compile(r"^(?P<knob>\w+)=(?P<value>\S+) \(default (?P<default>\S+), s0=(?P<s0>\S+)\)$")
#: The sensitivity sweep's default point is the main CS sweep's run at the same s0: same network, seeds and
#: every other setting.
SENSITIVITY_DEFAULT_RULE = ("each hyperparameter's default point is the main CS run at the sweep's s0 "
                            "(the same search with the profile's own values)")


@dataclass(frozen=True)
class SensitivityPoint:
    """One value of one CS hyperparameter: its ticket (rewind retraining) and pruned network, over seeds."""

    knob: str
    value: float
    is_default: bool
    ticket: "Group | None"
    pruned: "Group | None"

Unit = Literal["epochs", "seconds"]
Mode = Literal["sequential", "parallel"]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1); the std of a single value is 0."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(vals)
    return mean, (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def method_sort_key(method: str) -> tuple[int, str]:
    try:
        return (METHOD_ORDER.index(method), method)
    except ValueError:
        return (len(METHOD_ORDER), method)


_SETTING_RE = re.compile(r"^\s*([^=]*?)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def setting_sort_key(setting: str) -> tuple:
    """Natural order of settings: "s0=-0.1" < "s0=-0.05" < "s0=0"; "level=2" < "level=10"."""
    match = _SETTING_RE.match(setting)
    if match:
        return (0, match.group(1), float(match.group(2)), setting)
    try:
        return (0, "", float(setting), setting)
    except ValueError:
        return (1, setting, 0.0, setting)


def setting_value(setting: str, name: str) -> float | None:
    """The value of a setting named ``name`` ("s0=-0.005", "s0" -> -0.005); None for another setting."""
    match = _SETTING_RE.match(setting)
    return float(match.group(2)) if match and match.group(1) == name else None


@dataclass(frozen=True)
class Group:
    """Rows of one (network, track, method, variant, setting), aggregated over seeds."""

    network: str
    dataset: str
    track: str
    method: str
    variant: str
    setting: str
    seeds: tuple[int, ...]
    test_acc_mean: float
    test_acc_std: float
    val_acc_mean: float
    val_acc_std: float
    remaining_mean: float
    remaining_std: float
    search_epochs: float  # mean over seeds
    search_seconds: float  # mean over seeds
    retrain_epochs: float  # mean over seeds
    params_total: float
    params_nonzero: float
    flops_dense: float
    flops_nonzero: float
    layer_remaining: dict[str, float] = field(compare=False, hash=False)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def sparsity_mean(self) -> float:
        return 1.0 - self.remaining_mean

    @property
    def label(self) -> str:
        return f"{pretty_method(self.method)} [{self.setting}]"


@dataclass(frozen=True)
class DenseRef:
    """The dense network of one benchmark: test accuracy over seeds."""

    network: str
    dataset: str
    seeds: tuple[int, ...]
    test_acc_mean: float
    test_acc_std: float
    params_total: float
    flops_dense: float

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def threshold(self) -> float:
        """Lowest mean test accuracy that still counts as matching."""
        return self.test_acc_mean - self.test_acc_std


def is_matching(test_acc_mean: float, dense: DenseRef) -> bool:
    """Apply :data:`MATCHING_RULE` (the only place it is applied)."""
    return test_acc_mean >= dense.threshold - MATCH_EPS


@dataclass(frozen=True)
class CurvePoint:
    cost: float  # cumulative cost when this ticket's accuracy is known
    best_accuracy: float  # best mean test accuracy among tickets known at this cost
    accuracy: float  # this ticket's mean test accuracy
    setting: str


@dataclass(frozen=True)
class SearchCurve:
    """Accuracy of the best ticket found so far vs cost spent, for one method on one network."""

    network: str
    method: str
    mode: Mode
    unit: Unit
    points: tuple[CurvePoint, ...]

    @property
    def final_cost(self) -> float:
        return self.points[-1].cost

    def cost_of(self, setting: str) -> float:
        for point in self.points:
            if point.setting == setting:
                return point.cost
        raise KeyError(setting)


def _group(rows: Sequence[Row]) -> Group:
    first = rows[0]
    layers: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for name, frac in row.layer_remaining.items():
            layers[name].append(frac)
    acc = mean_std(r.test_accuracy for r in rows)
    # no validation set (val_size 0): NaN, never quoted (the report reads test accuracy)
    val = mean_std(r.val_accuracy for r in rows) if all(r.val_accuracy is not None for r in rows) else (
        math.nan, math.nan)
    rw = mean_std(r.remaining_weights for r in rows)
    return Group(
        network=first.network,
        dataset=first.dataset,
        track=first.track,
        method=first.method,
        variant=first.variant,
        setting=first.setting,
        seeds=tuple(sorted(r.seed for r in rows)),
        test_acc_mean=acc[0],
        test_acc_std=acc[1],
        val_acc_mean=val[0],
        val_acc_std=val[1],
        remaining_mean=rw[0],
        remaining_std=rw[1],
        search_epochs=statistics.fmean(r.search_epochs for r in rows),
        search_seconds=statistics.fmean(r.search_seconds for r in rows),
        retrain_epochs=statistics.fmean(r.retrain_epochs for r in rows),
        params_total=statistics.fmean(r.params_total for r in rows),
        params_nonzero=statistics.fmean(r.params_nonzero for r in rows),
        flops_dense=statistics.fmean(r.flops_dense for r in rows),
        flops_nonzero=statistics.fmean(r.flops_nonzero for r in rows),
        layer_remaining={name: statistics.fmean(v) for name, v in layers.items()},
    )


def _best_per_remaining(points: Sequence[tuple[float, float]]) -> dict[float, float]:
    """remaining weights -> the best accuracy among the points at exactly that value."""
    best: dict[float, float] = {}
    for remaining, acc in points:
        best[remaining] = max(acc, best.get(remaining, -math.inf))
    return best


def interpolate_accuracy(points: Sequence[tuple[float, float]], remaining: float) -> float | None:
    """Accuracy at ``remaining`` by linear interpolation in log(remaining weights).

    ``points`` are (remaining weights, accuracy); several points at the same remaining weights
    keep the best accuracy.  Returns None outside the covered range.
    """
    best = _best_per_remaining(points)
    xs = sorted(best)
    if not xs or remaining < xs[0] * (1 - 1e-12) or remaining > xs[-1] * (1 + 1e-12):
        return None
    for lo, hi in zip(xs, xs[1:]):
        if lo <= remaining <= hi:
            t = (math.log(remaining) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return best[lo] + t * (best[hi] - best[lo])
    # a single point, or ``remaining`` equal to an end up to round-off
    return best[min(xs, key=lambda x: abs(x - remaining))]


def matched_sparsity(a: float, b: float) -> bool:
    """Whether two remaining-weight fractions count as the same sparsity (see MATCHED_SPARSITY_RULE)."""
    return abs(a - b) <= MATCHED_SPARSITY_TOLERANCE * max(a, b)


@dataclass(frozen=True)
class Reading:
    """A method's accuracy at one level of remaining weights: measured (a ticket at matched sparsity)
    or interpolated between the two nearest measured tickets, which are kept so the report can name them."""

    level: float
    accuracy: float
    measured_at: float | None = None  # remaining weights of the measured ticket
    below: tuple[float, float] | None = None  # (remaining, accuracy) of the sparser neighbour
    above: tuple[float, float] | None = None  # (remaining, accuracy) of the denser neighbour

    @property
    def interpolated(self) -> bool:
        return self.measured_at is None


def read_accuracy(points: Sequence[tuple[float, float]], level: float) -> Reading | None:
    """The accuracy of ``points`` (remaining weights, accuracy) at ``level``, measured where a point is at
    matched sparsity (the nearest one; several at one sparsity keep the best), else interpolated.
    None outside the covered range."""
    best = _best_per_remaining(points)
    if not best:
        return None
    nearest = min(best, key=lambda x: abs(math.log(x) - math.log(level)))
    if matched_sparsity(nearest, level):
        return Reading(level, best[nearest], measured_at=nearest)
    accuracy = interpolate_accuracy(points, level)
    if accuracy is None:
        return None
    below = max(x for x in best if x < level)
    above = min(x for x in best if x > level)
    return Reading(level, accuracy, below=(below, best[below]), above=(above, best[above]))


def highest_common_sparsity(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]
) -> float | None:
    """The smallest remaining weights both point sets reach (None when their ranges do not meet)."""
    if not a or not b:
        return None
    low = max(min(p[0] for p in a), min(p[0] for p in b))
    high = min(max(p[0] for p in a), max(p[0] for p in b))
    return low if low <= high * (1 + 1e-12) else None


class Aggregates:
    """All groups of a set of rows, with the queries the figures, tables and report need."""

    def __init__(self, rows: Iterable[Row | Mapping[str, Any]]) -> None:
        self.rows = as_rows(rows)
        buckets: dict[tuple, list[Row]] = defaultdict(list)
        for row in self.rows:
            buckets[(row.network, row.track, row.method, row.variant, row.setting)].append(row)
        self.groups: list[Group] = [_group(rs) for rs in buckets.values()]
        self._networks = list(dict.fromkeys(r.network for r in self.rows))
        self._datasets = {r.network: r.dataset for r in self.rows}
        self._dense: dict[str, DenseRef] = {}
        for network in self._networks:
            dense = [r for r in self.rows if r.network == network and r.method == "dense"
                     and r.track == "ticket" and r.variant == "rewind"]
            if dense:
                mean, std = mean_std(r.test_accuracy for r in dense)
                self._dense[network] = DenseRef(
                    network=network,
                    dataset=dense[0].dataset,
                    seeds=tuple(sorted(r.seed for r in dense)),
                    test_acc_mean=mean,
                    test_acc_std=std,
                    params_total=statistics.fmean(r.params_total for r in dense),
                    flops_dense=statistics.fmean(r.flops_dense for r in dense),
                )

    # ---- look-ups -----------------------------------------------------------------------
    def networks(self) -> list[str]:
        """Networks in order of first appearance in the rows."""
        return list(self._networks)

    def dataset(self, network: str) -> str:
        return self._datasets[network]

    def dense(self, network: str) -> DenseRef | None:
        """Dense reference of a network; None when the rows hold no dense run for it."""
        return self._dense.get(network)

    def has_track(self, track: str) -> bool:
        return any(g.track == track for g in self.groups)

    def methods(self, network: str | None = None, track: str = "ticket",
                variant: str | None = None) -> list[str]:
        """Methods other than "dense" with groups in ``track`` (and ``variant``), in display order."""
        found = {g.method for g in self.groups
                 if g.method != "dense" and g.track == track
                 and (network is None or g.network == network)
                 and (variant is None or g.variant == variant)}
        return sorted(found, key=method_sort_key)

    def headline_methods(self, network: str | None = None) -> list[str]:
        """The ticket-search methods the headline numbers show (DVC's summary.json, the README's table):
        those with rewound tickets, the ablations left to REPORT.md."""
        return [m for m in self.methods(network, "ticket", "rewind") if m not in ABLATION_METHODS]

    def variants(self, network: str, method: str, track: str = "ticket") -> list[str]:
        found = {g.variant for g in self.groups
                 if g.network == network and g.method == method and g.track == track}
        return sorted(found, key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER
                                            else len(VARIANT_ORDER), v))

    def groups_for(self, network: str, method: str, variant: str = "rewind",
                   track: str = "ticket") -> list[Group]:
        """Groups of one method and variant, in natural order of their settings."""
        found = [g for g in self.groups if g.network == network and g.method == method
                 and g.variant == variant and g.track == track]
        return sorted(found, key=lambda g: setting_sort_key(g.setting))

    # ---- matching -----------------------------------------------------------------------
    def is_matching(self, group: Group) -> bool | None:
        """Whether a group matches (None when the network has no dense reference)."""
        dense = self.dense(group.network)
        return None if dense is None else is_matching(group.test_acc_mean, dense)

    def best_ticket(self, network: str, method: str, variant: str = "rewind") -> Group | None:
        """The group with the highest mean test accuracy among the method's tickets."""
        groups = self.groups_for(network, method, variant)
        if not groups:
            return None
        return max(groups, key=lambda g: (g.test_acc_mean, -g.remaining_mean))

    def sparsest_matching(self, network: str, method: str,
                          variant: str = "rewind") -> Group | None:
        """The matching group with the lowest mean remaining weights (ties: the more accurate).

        None when no group matches or when the network has no dense reference.
        """
        dense = self.dense(network)
        if dense is None:
            return None
        matching = [g for g in self.groups_for(network, method, variant)
                    if is_matching(g.test_acc_mean, dense)]
        if not matching:
            return None
        lowest = min(g.remaining_mean for g in matching)
        tied = [g for g in matching if g.remaining_mean <= lowest + 1e-12]
        return max(tied, key=lambda g: g.test_acc_mean)

    def cheapest_matching(self, network: str, method: str, at_most: float,
                          unit: Unit = "epochs") -> Group | None:
        """The matching ticket with remaining weights at most ``at_most`` (up to matched sparsity) that
        costs least to reach; None when there is none or no dense reference."""
        dense = self.dense(network)
        if dense is None:
            return None
        found = [g for g in self.groups_for(network, method)
                 if is_matching(g.test_acc_mean, dense)
                 and (g.remaining_mean <= at_most or matched_sparsity(g.remaining_mean, at_most))]
        if not found:
            return None
        return min(found, key=lambda g: (self.cost_to_reach(g, unit), g.remaining_mean))

    # ---- search cost (the only place it is computed) ------------------------------------
    @staticmethod
    def search_cost(group: Group, unit: Unit = "epochs") -> float:
        """Mean recorded search cost of a group (no retraining added)."""
        return group.search_epochs if unit == "epochs" else group.search_seconds

    @staticmethod
    def retrain_cost(group: Group, unit: Unit = "epochs") -> float:
        """Cost of retraining the ticket to measure it; 0 where the search already contains it."""
        if group.method in SEARCH_INCLUDES_RETRAIN:
            return 0.0
        if unit == "epochs":
            return group.retrain_epochs
        if group.search_epochs <= 0:
            return 0.0
        return group.retrain_epochs * group.search_seconds / group.search_epochs

    def cost_to_reach(self, group: Group, unit: Unit = "epochs") -> float:
        """Cost to obtain and measure this one ticket: its search (cumulative along the levels of
        a chain method) plus its own retraining.  For CS this is one s0 run, i.e. the wall-clock
        cost when the s0 sweep runs in parallel."""
        return self.search_cost(group, unit) + self.retrain_cost(group, unit)

    def search_curve(self, network: str, method: str, mode: Mode = "sequential",
                     unit: Unit = "epochs") -> SearchCurve | None:
        """Accuracy of the best ticket found so far vs cost spent (see :data:`SEARCH_COST_RULE`).

        ``mode="parallel"`` exists only for methods with independent runs per setting (not for
        :data:`CHAIN_METHODS`); it returns None there, and when the method has no tickets.
        """
        groups = self.groups_for(network, method, "rewind", "ticket")
        if not groups:
            return None
        chain = method in CHAIN_METHODS
        if mode == "parallel" and chain:
            return None
        costs: list[tuple[float, Group]] = []
        if chain:
            # levels in search order: the recorded search cost grows along the chain
            groups = sorted(groups, key=lambda g: (g.search_epochs, setting_sort_key(g.setting)))
            retrained = 0.0
            for g in groups:
                retrained += self.retrain_cost(g, unit)
                costs.append((self.search_cost(g, unit) + retrained, g))
        elif mode == "sequential":
            spent = 0.0
            for g in groups:  # natural order of settings
                spent += self.cost_to_reach(g, unit)
                costs.append((spent, g))
        else:  # parallel: every run starts at once; a run's result is known after its own cost
            costs = sorted(((self.cost_to_reach(g, unit), g) for g in groups),
                           key=lambda cg: (cg[0], setting_sort_key(cg[1].setting)))
        points, best = [], -math.inf
        for cost, g in costs:
            best = max(best, g.test_acc_mean)
            points.append(CurvePoint(cost, best, g.test_acc_mean, g.setting))
        return SearchCurve(network, method, mode, unit, tuple(points))

    # ---- comparisons used by the claims -------------------------------------------------
    def ticket_points(self, network: str, method: str) -> list[tuple[float, float]]:
        """(mean remaining weights, mean test accuracy) of the method's rewound tickets."""
        return [(g.remaining_mean, g.test_acc_mean) for g in self.groups_for(network, method)]

    def best_pruning_groups(self, network: str, method: str) -> list[Group]:
        """Pruning track: per setting, the variant (pruned or fine-tuned) with the best test accuracy,
        densest first."""
        best: dict[str, Group] = {}
        for g in self.groups:
            if g.network == network and g.method == method and g.track == "pruning":
                if g.setting not in best or g.test_acc_mean > best[g.setting].test_acc_mean:
                    best[g.setting] = g
        return sorted(best.values(), key=lambda g: -g.remaining_mean)

    def sensitivity(self, network: str) -> dict[str, list[SensitivityPoint]]:
        """CS's sensitivity sweep on `network`: per hyperparameter, its values in increasing order, the
        default among them (SENSITIVITY_DEFAULT_RULE). Empty when the sweep did not run there."""
        found: dict[tuple[str, float], dict[str, Any]] = {}
        defaults: dict[str, tuple[float, str]] = {}
        for g in self.groups:
            match = SENSITIVITY_SETTING.match(g.setting) if g.network == network and g.method == "cs_sensitivity" else None
            if match is None:
                continue
            knob, value = match["knob"], float(match["value"])
            defaults[knob] = (float(match["default"]), match["s0"])
            entry = found.setdefault((knob, value), {})
            if (g.track, g.variant) == ("ticket", "rewind"):
                entry["ticket"] = g
            elif (g.track, g.variant) == ("pruning", "pruned"):
                entry["pruned"] = g
        points: dict[str, list[SensitivityPoint]] = {}
        for (knob, value), entry in found.items():
            points.setdefault(knob, []).append(SensitivityPoint(knob, value, False, entry.get("ticket"),
                                                                entry.get("pruned")))
        for knob, (default, s0) in defaults.items():
            setting = f"s0={s0}"
            ticket = next((g for g in self.groups_for(network, "cs") if g.setting == setting), None)
            pruned = next((g for g in self.groups_for(network, "cs", "pruned", "pruning") if g.setting == setting), None)
            if ticket is not None or pruned is not None:
                points[knob].append(SensitivityPoint(knob, default, True, ticket, pruned))
        return {knob: sorted(values, key=lambda p: p.value) for knob, values in sorted(points.items())}

    def pruning_points(self, network: str, method: str) -> list[tuple[float, float]]:
        """Pruning track: per setting, the best variant's (remaining weights, test accuracy)."""
        return [(g.remaining_mean, g.test_acc_mean) for g in self.best_pruning_groups(network, method)]

