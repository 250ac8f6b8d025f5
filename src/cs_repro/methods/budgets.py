"""Layer budgets: how many weights of each prunable tensor a pruning method may keep at an overall sparsity.

* ``global``: no per-layer budget; one ranking across all tensors decides (magnitude pruning's default).
* ``uniform``: every tensor keeps the same fraction, round((1 - s) * n_l).
* ``erk``: Erdős–Rényi-Kernel (Evci et al. 2020, RigL): a tensor's density is proportional to the sum of
  its dimensions over their product (for a conv, (out + in + kh + kw) / (out * in * kh * kw)), scaled so
  that the kept weights add up to (1 - s) * N; a tensor whose density would exceed 1 stays dense and the
  others are scaled again, until none does.
* ``cs``: a CS ticket's own layer-wise counts (the `gmp_cs_layers` ablation).

Pure arithmetic on shapes (no torch), so the report and the tests can use it as well as the methods.
"""

from __future__ import annotations

import math
from typing import Sequence

from cs_repro.errors import UserError

#: The per-layer budgets a pruning baseline can be given besides `global` (reviewer 1 asked for ERK), each with
#: the words the report names it by (method labels, table headings).
LAYER_BUDGETS = {"uniform": "uniform layers", "erk": "ERK layers"}


def _kept_total(sparsity: float, total: int) -> int:
    return max(1, round((1.0 - sparsity) * total))


def erk_densities(shapes: dict[str, Sequence[int]], sparsity: float) -> dict[str, float]:
    """Per-tensor densities of the ERK budget at an overall `sparsity` (see the module docstring)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    scores = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    target = (1.0 - sparsity) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        left = target - sum(sizes[name] for name in dense)
        weighted = sum(scores[name] * sizes[name] for name in shapes if name not in dense)
        if weighted <= 0:
            return {name: 1.0 for name in shapes}
        scale = left / weighted
        overflow = {name for name in shapes if name not in dense and scale * scores[name] > 1.0}
        if not overflow:
            return {name: 1.0 if name in dense else scale * scores[name] for name in shapes}
        dense |= overflow


def layer_kept_counts(budget: str, shapes: dict[str, Sequence[int]], sparsity: float) -> dict[str, int]:
    """Weights each tensor keeps under `budget` ('uniform' or 'erk') at overall `sparsity`. Every tensor
    keeps at least one weight; the counts add up to round((1 - s) * N) whenever that allows one per tensor
    (rounding remainders go to the tensors with the largest fractional parts, ties in name order)."""
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"a layer budget needs a sparsity in [0, 1), got {sparsity}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    if budget == "uniform":
        densities = {name: 1.0 - sparsity for name in shapes}
    elif budget == "erk":
        densities = erk_densities(shapes, sparsity)
    else:
        raise UserError(f"unknown layer budget {budget!r}; choose one of: {', '.join(LAYER_BUDGETS)}")
    exact = {name: densities[name] * sizes[name] for name in shapes}
    counts = {name: min(sizes[name], max(1, math.floor(value))) for name, value in exact.items()}
    short = _kept_total(sparsity, sum(sizes.values())) - sum(counts.values())
    by_remainder = sorted(shapes, key=lambda name: (-(exact[name] - math.floor(exact[name])), name))
    for name in by_remainder:
        if short <= 0:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
            short -= 1
    return counts
