"""The ticket artifact: a binary mask per prunable tensor, the rewind-point state, and metadata.

File format (`torch.save` of a plain dict, loadable with `weights_only=True`):

    {"format": "cs-repro-ticket/1",
     "masks": {name: bool tensor},            # 1 keeps a weight
     "rewind_state": {name: tensor},          # full model state at the rewind point (BN statistics too)
     "metadata": {method, network, model, dataset, seed, setting, params, remaining_weights, sparsity,
                  layer_remaining, search_epochs, rewind_epoch, mask_scale, weight_scale (CS: see cs.mask_scale)}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

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


#: Metadata every ticket carries; retraining, the controls and the evaluation read these.
REQUIRED_METADATA = ("method", "network", "model", "seed", "setting", "search_epochs")


def load_ticket(path: Path) -> Ticket:
    """Read a ticket, checking its structure (one line naming what is wrong, never a traceback)."""
    raw = safe_torch_load(path, "ticket")
    if not isinstance(raw, dict) or raw.get("format") != TICKET_FORMAT:
        raise UserError(f"ticket {path} is not a {TICKET_FORMAT} file")
    for key in ("masks", "rewind_state", "metadata"):
        if not isinstance(raw.get(key), dict):
            raise UserError(f"ticket {path} has no {key!r} mapping")
    masks, state, metadata = raw["masks"], raw["rewind_state"], raw["metadata"]
    if not masks:
        raise UserError(f"ticket {path} holds no masks")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise UserError(f"ticket {path}: metadata lacks {', '.join(missing)}")
    for name, mask in masks.items():
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise UserError(f"ticket {path}: mask {name!r} is {kind}, not a bool tensor")
        if name not in state:
            raise UserError(f"ticket {path}: mask {name!r} has no weights in the rewind state")
        if tuple(mask.shape) != tuple(state[name].shape):
            raise UserError(f"ticket {path}: mask {name!r} has shape {tuple(mask.shape)}, its weight {tuple(state[name].shape)}")
    return Ticket(masks=masks, rewind_state=state, metadata=metadata)


def check_ticket_fits(ticket: Ticket, path: Path, model: nn.Module, prunable: list[str]) -> None:
    """The ticket masks exactly the network's prunable tensors, with their shapes, and its rewind state is a
    state of this network: otherwise retraining it would train another network than the one it names."""
    names = set(ticket.masks)
    if names != set(prunable):
        extra, absent = sorted(names - set(prunable)), sorted(set(prunable) - names)
        parts = ([f"masks {', '.join(extra)} that are not prunable here"] if extra else []) + \
                ([f"no mask for {', '.join(absent)}"] if absent else [])
        raise UserError(f"ticket {path} does not fit network {ticket.metadata['network']!r}: {'; '.join(parts)}")
    expected = model.state_dict()
    for name, mask in ticket.masks.items():
        if tuple(mask.shape) != tuple(expected[name].shape):
            raise UserError(f"ticket {path}: mask {name!r} has shape {tuple(mask.shape)}, the network's weight "
                            f"{tuple(expected[name].shape)}")
    unknown = sorted(set(ticket.rewind_state) - set(expected))
    absent = sorted(set(expected) - set(ticket.rewind_state))
    if unknown or absent:
        raise UserError(f"ticket {path}: its rewind state does not match network {ticket.metadata['network']!r} "
                        f"({len(unknown)} unknown and {len(absent)} missing entries, e.g. "
                        f"{(unknown + absent)[0]})")
