"""Deterministic class-balanced train/validation splits and subsets (index tensors, sorted)."""

from __future__ import annotations

import torch

from cs_repro.errors import UserError


def _balanced_pick(labels: torch.Tensor, size: int, seed: int, what: str) -> torch.Tensor:
    """Sorted indices of `size` samples, size // K from each of the K classes present; the
    remainder goes one extra each to the lowest-numbered classes. Random within a class, from `seed`."""
    if labels.ndim != 1:
        raise UserError(f"{what}: labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    labels = labels.detach().to("cpu", torch.int64)
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    k = len(classes)
    if k == 0:
        raise UserError(f"{what}: the dataset is empty; check the data")
    quota = torch.full((k,), size // k, dtype=torch.int64)
    quota[: size % k] += 1
    short = (counts < quota).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise UserError(
            f"{what}: class {int(classes[c])} has {int(counts[c])} samples but needs {int(quota[c])} for a "
            f"class-balanced size of {size}; choose a smaller size"
        )
    gen = torch.Generator().manual_seed(int(seed))
    # One random key per sample; the `quota` smallest keys within each class are picked.
    keys = torch.rand(len(labels), generator=gen, dtype=torch.float64)
    order = torch.argsort(keys)
    order = order[torch.argsort(labels[order], stable=True)]  # grouped by class, random within
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - torch.repeat_interleave(starts, counts)
    take = rank < torch.repeat_interleave(quota, counts)
    return torch.sort(order[take]).values


def class_balanced_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx): val_size samples, balanced over classes, held out; both sorted, disjoint, covering."""
    n = len(labels)
    if not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 1 or val_size >= n:
        raise UserError(f"val_size must be an integer in 1..{n - 1} (the training set has {n} samples), got {val_size!r}")
    val = _balanced_pick(labels, val_size, seed, "val_size")
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return mask.nonzero().flatten(), val


def subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced random subsample of `size` samples (e.g. the quick profile's 20k)."""
    n = len(labels)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size > n:
        raise UserError(f"subset size must be an integer in 1..{n} (the set has {n} samples), got {size!r}")
    if size == n:
        return torch.arange(n)
    return _balanced_pick(labels, size, seed, "subset size")
