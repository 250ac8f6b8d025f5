"""The random-mask control: a mask with exactly a ticket's layer-wise counts, positions drawn at random.

Retrained from the ticket's rewind point (`cs_repro.methods.retrain.TicketRetrain`), it separates what
the ticket's *structure* contributes from what its per-layer sparsities alone give (result rows:
the ticket's method, variant `random`).
"""

from __future__ import annotations

import torch
from torch import Tensor

RANDOM_SEED_OFFSET = 424_243  # random masks are drawn independently of the ticket's own seed stream


def random_masks_like(masks: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """For every tensor, a bool mask of the same shape keeping exactly as many weights, uniformly placed."""
    out = {}
    for name, mask in masks.items():
        kept = int(mask.count_nonzero())
        order = torch.randperm(mask.numel(), generator=generator)
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[order[:kept]] = True
        out[name] = flat.view(mask.shape)
    return out


def random_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + RANDOM_SEED_OFFSET)
