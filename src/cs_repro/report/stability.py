"""Whether a verdict survives the obvious perturbation: each seed left out in turn, each setting of the
methods it compares left out in turn, judged again from the same rows (no training). Defined here and only
here (:data:`STABILITY_RULE`); the report and ``metrics/verdicts.json`` quote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from cs_repro.report.aggregate import Aggregates, setting_sort_key
from cs_repro.report.rows import pretty_method, pretty_network

STABILITY_RULE = (
    "Each verdict is judged again from the same result rows with each seed left out in turn and with each "
    "setting (s0, level, penalty, target) of the methods it compares left out in turn; no training. It is "
    "*fragile* when one of these gives another verdict, and the report names what flips it. A setting whose "
    "absence only opens a gap in the grid or leaves a method at its edge (the verdict becomes \"cannot be "
    "judged: coverage\"), or removes a method that ran one setting, does not count: taking away a point the "
    "grid needed says nothing about the methods. Rules that ask for two seeds (CS vs. L0) are not applied to "
    "the one-seed re-judgements."
)


@dataclass(frozen=True)
class LeftOut:
    """One perturbation: a seed (``seed`` set) or one setting of one method on one network."""

    seed: int | None = None
    network: str = ""
    method: str = ""
    setting: str = ""

    def label(self, several_networks: bool) -> str:
        if self.seed is not None:
            return f"seed {self.seed}"
        where = f" on {pretty_network(self.network)}" if several_networks else ""
        return f"{pretty_method(self.method)} {self.setting}{where}"


@dataclass(frozen=True)
class Stability:
    """A verdict and what it becomes under each perturbation that changes it."""

    verdict: str
    judged: int  # how many perturbations were judged
    flips: tuple[tuple[str, str], ...]  # (what was left out, the verdict then)

    @property
    def fragile(self) -> bool:
        return bool(self.flips)

    def text(self) -> str:
        if not self.judged:
            return "stability not measured (one seed and no setting to leave out)"
        if not self.flips:
            return f"stable: the same with any one of the {self.judged} seeds or settings left out"
        return "fragile: " + "; ".join(f"leaving out {what} makes it \"{then}\"" for what, then in self.flips)


class Perturbations:
    """The rows of a run with one seed or one setting left out, each judged lazily and kept for reuse."""

    def __init__(self, agg: Aggregates) -> None:
        self.agg = agg
        self._cache: dict[LeftOut, Aggregates] = {}
        self._several = len(agg.networks()) > 1

    def left_outs(self, methods: Iterable[str]) -> list[LeftOut]:
        """Each seed (when there are two or more), then each setting of ``methods`` on each network."""
        wanted = set(methods)
        seeds = sorted({row.seed for row in self.agg.rows})
        found = [LeftOut(seed=s) for s in seeds] if len(seeds) > 1 else []
        settings = {(row.network, row.method, row.setting) for row in self.agg.rows if row.method in wanted}
        found += [LeftOut(network=n, method=m, setting=s)
                  for n, m, s in sorted(settings, key=lambda k: (k[0], k[1], setting_sort_key(k[2])))]
        return found

    def aggregates(self, left_out: LeftOut) -> Aggregates:
        if left_out not in self._cache:
            if left_out.seed is not None:
                rows = [r for r in self.agg.rows if r.seed != left_out.seed]
            else:
                rows = [r for r in self.agg.rows
                        if (r.network, r.method, r.setting) != (left_out.network, left_out.method, left_out.setting)]
            self._cache[left_out] = Aggregates(rows)
        return self._cache[left_out]

    def stability(self, judge: Callable[[Aggregates], str | None], methods: Iterable[str],
                  rejudge: Callable[[Aggregates], str | None] | None = None) -> Stability:
        """Judge again under every perturbation of ``methods`` (with ``rejudge`` where the perturbed rows need
        another rule, e.g. no two-seed gate). A setting left out may turn the verdict into a coverage one (its
        text says "coverage") without counting as a flip."""
        verdict = judge(self.agg)
        rejudge = rejudge or judge
        flips, judged = [], 0
        for left_out in self.left_outs(methods):
            then = rejudge(self.aggregates(left_out))
            judged += 1
            # a setting left out may only un-measure the grid (coverage) or remove a one-setting method entirely
            if then == verdict or (left_out.seed is None and (then is None or "coverage" in then.lower())):
                continue
            flips.append((left_out.label(self._several), then if then is not None else "not judged"))

        return Stability(verdict or "", judged, tuple(flips))
