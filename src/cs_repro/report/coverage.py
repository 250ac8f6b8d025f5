"""Whether a run's grid of settings covers a comparison: gaps between measured tickets, methods stopped at
their edge, and the settings that would fill either. Defined here and only here (:data:`COVERAGE_RULE`,
:data:`EDGE_RULE`); the claims (:mod:`cs_repro.report.claims`) apply them, `cs-repro suggest-settings`
prints the same suggestions.

A method's tickets are points (remaining weights, accuracy) at the settings the profile ran (CS: one s0
each; IMP: one level each; L0: one penalty each; GMP and magnitude pruning: one target each). What lies
between two of them was not measured, so a comparison may rest on it only where the two are close: IMP's
own step is 1.25x, and :data:`MAX_GAP` allows up to 2x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

from cs_repro.methods import METHODS
from cs_repro.report.aggregate import Aggregates, Group, Reading, matched_sparsity, setting_value
from cs_repro.report.rows import pretty_method
from cs_repro.report.tables import fmt_remaining

#: The widest step in remaining weights between two neighbouring measured tickets that a comparison may rest on.
MAX_GAP = 2.0

COVERAGE_RULE = (
    f"A comparison rests only on measured tickets that lie close together. An accuracy interpolated between "
    f"two of a method's tickets whose remaining weights differ by more than {MAX_GAP:g}x (IMP's own step is "
    f"1.25x), or a sparsest matching ticket whose next sparser ticket keeps under 1/{MAX_GAP:g} of its weights, "
    "where a ticket inside that gap could change the answer, makes the comparison \"cannot be judged: "
    "coverage\"; the report names the settings that would fill the gap (interpolated in the setting against "
    "log(remaining weights) between the two tickets)."
)

EDGE_RULE = (
    "A method whose sparsest matching ticket is also its sparsest run has not been pushed to its limit and may "
    "match sparser: the report says so, and a comparison of sparsest matching tickets that this method would "
    "lose by keeping more weights cannot be judged (coverage). One that it wins stands: a sparser run could only "
    "widen its lead."
)


@dataclass(frozen=True)
class Hole:
    """Where a method's grid does not cover: a gap between two neighbouring tickets (``sparser`` set), or its
    edge (``sparser`` None: the sparsest run still matches)."""

    network: str
    method: str
    track: str
    denser: Group
    sparser: Group | None

    @property
    def is_edge(self) -> bool:
        return self.sparser is None

    @property
    def ratio(self) -> float:
        return math.inf if self.sparser is None else self.denser.remaining_mean / self.sparser.remaining_mean

    def describe(self) -> str:
        def pct(fraction: float) -> str:
            return f"{fmt_remaining(fraction)}%"

        name = pretty_method(self.method)
        if self.sparser is None:
            return (f"{name} still matches at its sparsest setting, {pct(self.denser.remaining_mean)} "
                    f"[{self.denser.setting}]: it may match sparser")
        return (f"{name}'s {'tickets' if self.track == 'ticket' else 'networks'} jump from "
                f"{pct(self.denser.remaining_mean)} [{self.denser.setting}] to {pct(self.sparser.remaining_mean)} "
                f"[{self.sparser.setting}] ({self.ratio:.1f}x)")


def too_far_apart(denser: float, sparser: float) -> bool:
    """Whether two neighbouring tickets' remaining weights are more than MAX_GAP apart (the one test of a gap)."""
    return denser > MAX_GAP * sparser * (1 + 1e-9)


def method_groups(agg: Aggregates, network: str, method: str, track: str) -> list[Group]:
    """The groups whose remaining weights a method's comparisons read, densest first: its rewound tickets
    (ticket track) or, per setting, its best pruned / fine-tuned network (pruning track)."""
    if track == "ticket":
        groups = agg.groups_for(network, method)
    else:
        groups = agg.best_pruning_groups(network, method)
    return sorted(groups, key=lambda g: -g.remaining_mean)


def gaps(agg: Aggregates, network: str, method: str, track: str) -> list[Hole]:
    """Every pair of neighbouring settings more than MAX_GAP apart in remaining weights, densest first."""
    groups = method_groups(agg, network, method, track)
    return [Hole(network, method, track, a, b) for a, b in zip(groups, groups[1:])
            if too_far_apart(a.remaining_mean, b.remaining_mean)]


def edge(agg: Aggregates, network: str, method: str) -> Hole | None:
    """The edge hole of a ticket method whose sparsest matching ticket is its sparsest run (None otherwise)."""
    groups = method_groups(agg, network, method, "ticket")
    match = agg.sparsest_matching(network, method)
    if match is None or not groups or groups[-1].remaining_mean < match.remaining_mean - 1e-12:
        return None
    return Hole(network, method, "ticket", match, None)


def holes(agg: Aggregates, network: str, method: str, track: str) -> list[Hole]:
    """A method's gaps, then its edge (ticket track only)."""
    found = gaps(agg, network, method, track)
    if track == "ticket" and (at_edge := edge(agg, network, method)) is not None:
        found.append(at_edge)
    return found


def reading_hole(agg: Aggregates, network: str, method: str, track: str, reading: Reading) -> Hole | None:
    """The gap an interpolated reading lies in, when it is wider than MAX_GAP (None: measured, or a close pair)."""
    if not reading.interpolated or reading.above is None or reading.below is None:
        return None
    if not too_far_apart(reading.above[0], reading.below[0]):
        return None
    groups = method_groups(agg, network, method, track)

    def at(remaining: float) -> Group:
        return max((g for g in groups if g.remaining_mean == remaining), key=lambda g: g.test_acc_mean)

    return Hole(network, method, track, at(reading.above[0]), at(reading.below[0]))


def sparsest_matching_hole(agg: Aggregates, network: str, method: str, other_level: float) -> Hole | None:
    """Whether a method's sparsest matching ticket could lie sparser than measured, down to ``other_level``
    (the other method's sparsest matching ticket): its edge, or a gap below it that reaches that level."""
    match = agg.sparsest_matching(network, method)
    if match is None:
        return None
    sparser = [g for g in method_groups(agg, network, method, "ticket")
               if g.remaining_mean < match.remaining_mean - 1e-12]
    if not sparser:
        return Hole(network, method, "ticket", match, None)
    below = sparser[0]
    reaches = below.remaining_mean <= other_level or matched_sparsity(below.remaining_mean, other_level)
    if too_far_apart(match.remaining_mean, below.remaining_mean) and reaches:
        return Hole(network, method, "ticket", match, below)
    return None


# ---- the settings that would fill a hole ----------------------------------------------------------
@dataclass(frozen=True)
class Suggestion:
    """Values of one params key that would fill a hole (empty: none can be computed, see ``why``)."""

    key: str
    values: tuple[float, ...]
    why: str = ""

    def text(self) -> str:
        if not self.values:
            return self.why
        name = self.key.rsplit(".", 1)[-1]
        if self.key.endswith(".levels"):
            return f"set {self.key} to {int(self.values[0])}"
        return f"add {name} ≈ " + ", ".join(format_value(v) for v in self.values)


def format_value(value: float) -> str:
    """A setting as a params list shows it: plain decimals (YAML reads `1e-09` as a string)."""
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _rounded(value: float, allowed: Callable[[float], bool], taken: set[float]) -> float:
    """``value`` with as few significant digits as keep it allowed and new."""
    for digits in range(1, 8):
        candidate = float(f"{value:.{digits}g}")
        if allowed(candidate) and candidate not in taken:
            return candidate
    return value


def _axis_points(groups: Iterable[Group], name: str) -> list[tuple[float, float]]:
    """(remaining weights, setting value) of the groups whose setting is on the method's axis."""
    points = []
    for g in groups:
        value = setting_value(g.setting, name)
        if value is not None:
            points.append((g.remaining_mean, value))
    return points


def suggest(agg: Aggregates, hole: Hole) -> Suggestion:
    """The settings that would put a ticket every MAX_GAP (or closer) across a gap, or one step of at most
    MAX_GAP beyond an edge: interpolated (extrapolated past an edge) in the setting against log(remaining
    weights) from the method's own measured settings."""
    entry = METHODS.get(hole.method) if hole.method in METHODS else None
    if entry is None or entry.settings_key is None:
        return Suggestion("", (), f"no setting of {pretty_method(hole.method)} can be suggested")
    key, name, scale = entry.settings_key, entry.setting_name, entry.setting_scale
    groups = method_groups(agg, hole.network, hole.method, hole.track)
    points = sorted(_axis_points(groups, name), key=lambda p: -p[0])
    taken = {value for _, value in points}
    r_hi = hole.denser.remaining_mean
    if hole.sparser is not None:
        r_lo = hole.sparser.remaining_mean
        pieces = math.ceil(math.log(r_hi / r_lo) / math.log(MAX_GAP) - 1e-9)
        targets = [r_hi * (r_lo / r_hi) ** (i / pieces) for i in range(1, pieces)]
    else:
        targets = [r_hi / MAX_GAP]
    if scale == "sparsity":  # a target is exact: remaining = 1 - sparsity
        low, high = 1 - r_hi, (1 - hole.sparser.remaining_mean if hole.sparser is not None else 1.0)
        values: list[float] = []
        for r in targets:
            values.append(_rounded(1 - r, lambda v, low=low, high=high: low < v < high, taken | set(values)))
        return Suggestion(key, tuple(values))
    here = setting_value(hole.denser.setting, name)
    if here is None:
        return Suggestion("", (), f"{hole.denser.setting} is not a {name} setting")
    if hole.sparser is not None:
        there = setting_value(hole.sparser.setting, name)
        if there is None:
            return Suggestion("", (), f"{hole.sparser.setting} is not a {name} setting")
        anchors = ((r_hi, here), (hole.sparser.remaining_mean, there))
    else:  # extrapolate the last step of the method's own curve past its edge
        denser = [p for p in points if p[0] > r_hi * (1 + 1e-12)]
        if not denser:
            also = f" (and {ALSO_IN[key]})" if key in ALSO_IN else ""
            return Suggestion(key, (), f"one {name} is too few to extrapolate from: add another {name} to "
                                       f"{key}{also}")
        anchors = (denser[-1], (r_hi, here))
    (r_a, v_a), (r_b, v_b) = anchors
    log_scale = scale == "log"
    if log_scale and (v_a <= 0 or v_b <= 0):
        return Suggestion("", (), f"{name} values must be positive to interpolate in log scale")
    f_a, f_b = (math.log(v_a), math.log(v_b)) if log_scale else (v_a, v_b)
    values = []
    for target in targets:
        t = (math.log(target) - math.log(r_a)) / (math.log(r_b) - math.log(r_a))
        value = f_a + t * (f_b - f_a)
        value = math.exp(value) if log_scale else value
        if scale == "levels":  # the key is the last level: run enough levels to reach the target
            return Suggestion(key, (float(max(math.ceil(value - 1e-9), max(taken) + 1)),))
        if hole.sparser is not None:  # strictly inside the gap
            low, high = sorted((here, there))
            allowed = lambda v, low=low, high=high: low < v < high  # noqa: E731
        else:  # beyond the edge, on the side the curve goes
            allowed = lambda v, value=value: (v - here) * (value - here) > 0  # noqa: E731
        values.append(_rounded(value, allowed, taken | set(values)))
    return Suggestion(key, tuple(values))


def every_hole(agg: Aggregates) -> list[tuple[Hole, Suggestion]]:
    """Every gap and edge of every method on every network, on its main track, with its suggestion."""
    found: list[tuple[Hole, Suggestion]] = []
    seen: set[tuple] = set()
    for network in agg.networks():
        for track in ("ticket", "pruning"):
            for method in agg.methods(network, track):
                if track == "pruning" and method in agg.methods(network, "ticket", "rewind"):
                    continue  # a ticket method's grid is listed once, on its ticket track
                if method in METHODS and METHODS.get(method).settings_key is None:
                    continue  # no grid of its own along sparsity (CS's sensitivity sweep changes other knobs)
                for hole in holes(agg, network, method, track):
                    # a method retrained from another's tickets (CS's released scale) has the same tickets, so the
                    # same hole at the same remaining weights: listed once
                    key = (network, track, hole.denser.setting, hole.denser.remaining_mean,
                           hole.sparser.remaining_mean if hole.sparser else None,
                           METHODS.get(method).settings_key if method in METHODS else method)
                    if key in seen:
                        continue
                    seen.add(key)
                    found.append((hole, suggest(agg, hole)))
    return found


#: A settings key whose values must also be in another (params rule: ablations.s0 is a subset of sweep.s0).
ALSO_IN = {"ablations.s0": "sweep.s0"}


def current_settings(agg: Aggregates, key: str) -> set[float]:
    """The values of a settings key this run measured (evaluate reads only the runs params.yaml declares, so
    these are the key's values)."""
    values: set[float] = set()
    for name in METHODS:
        entry = METHODS.get(name)
        if entry.settings_key != key:
            continue
        for group in agg.groups:
            if group.method == name and (value := setting_value(group.setting, entry.setting_name)) is not None:
                values.add(value)
    return values


def exp_run_commands(agg: Aggregates, found: Iterable[tuple[Hole, Suggestion]]) -> list[str]:
    """`dvc exp run -S` lines that add every suggested value to its key (and to the key it must also be in)."""
    added: dict[str, set[float]] = {}
    for _, suggestion in found:
        if not suggestion.values:
            continue
        added.setdefault(suggestion.key, set()).update(suggestion.values)
        if suggestion.key in ALSO_IN:
            added.setdefault(ALSO_IN[suggestion.key], set()).update(suggestion.values)
    overrides = []
    for key, values in added.items():
        if key.endswith(".levels"):
            overrides.append(f"{key}={int(max(values))}")
            continue
        # s0 lists run from dense to sparse (descending), penalties and targets ascending, as the profiles write them
        listed = sorted(current_settings(agg, key) | values, reverse=key.endswith("s0"))
        overrides.append(f"'{key}=[{','.join(format_value(v) for v in listed)}]'")
    return ["dvc exp run " + " ".join(f"-S {o}" for o in overrides)] if overrides else []
