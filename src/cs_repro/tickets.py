"""The ticket artifact: a binary mask per prunable tensor, the rewind-point state, and metadata.

File format (`torch.save` of a plain dict, loadable with `weights_only=True`):

    {"format": "cs-repro-ticket/1",
     "masks": {name: bool tensor},            # 1 keeps a weight
     "rewind_state": {name: tensor},          # full model state at the rewind point (BN statistics too)
     "metadata": {method, network, model, dataset, seed, setting, params, remaining_weights, sparsity,
                  layer_remaining, search_epochs, rewind_epoch, mask_scale}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cs_repro.errors import UserError
from cs_repro.io import atomic_torch_save, safe_torch_load
from cs_repro.masks import sparsity_of

TICKET_FORMAT = "cs-repro-ticket/1"


@dataclass
class Ticket:
    masks: dict[str, Tensor]
    rewind_state: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining_weights(self) -> float:
        return sparsity_of(self.masks).remaining_weights

    def with_counts(self) -> "Ticket":
        """Fill the sparsity fields of the metadata from the masks themselves."""
        report = sparsity_of(self.masks)
        self.metadata.update(
            remaining_weights=report.remaining_weights,
            sparsity=report.sparsity,
            layer_remaining=report.layer_remaining(),
            remaining_count=report.remaining,
            prunable_count=report.total,
        )
        return self


def save_ticket(ticket: Ticket, path: Path) -> None:
    atomic_torch_save(
        {
            "format": TICKET_FORMAT,
            "masks": {k: v.to("cpu", torch.bool) for k, v in ticket.masks.items()},
            "rewind_state": {k: v.detach().to("cpu") for k, v in ticket.rewind_state.items()},
            "metadata": ticket.metadata,
        },
        path,
    )


def load_ticket(path: Path) -> Ticket:
    raw = safe_torch_load(path, "ticket")
    if not isinstance(raw, dict) or raw.get("format") != TICKET_FORMAT:
        raise UserError(f"ticket {path} is not a {TICKET_FORMAT} file")
    masks, state = raw["masks"], raw["rewind_state"]
    for name, mask in masks.items():
        if name not in state:
            raise UserError(f"ticket {path}: mask {name!r} has no weights in the rewind state")
        if tuple(mask.shape) != tuple(state[name].shape):
            raise UserError(f"ticket {path}: mask {name!r} has shape {tuple(mask.shape)}, its weight {tuple(state[name].shape)}")
    return Ticket(masks=masks, rewind_state=state, metadata=raw.get("metadata", {}))
