"""Ticket retraining: a fixed mask, weights from the rewind point (or fresh ones: the reinit control),
trained for E epochs with fresh optimisers. Masked weights stay exactly 0 (see `HardMasks`).

mask_scale c != 1 is the released CS code's retraining: every forward pass computes with c * m * W and
W is what SGD trains (so one step moves the effective weight c**2 times as far as under a plain mask).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cs_repro.errors import UserError
from cs_repro.masks import HardMasks, sparsity_of
from cs_repro.train import Hooks, TrainingLoop


class TicketRetrain(Hooks):
    """Retrain `masks` from `start_state` (the rewind point), or from the model's own fresh init if None."""

    def __init__(self, masks: dict[str, Tensor], start_state: dict[str, Tensor] | None, mask_scale: float = 1.0,
                 label: str = "retrain") -> None:
        self.masks = masks
        self.start_state = start_state
        self.mask_scale = mask_scale
        self.label = label
        self._hard: HardMasks | None = None
        self._remaining = sparsity_of(masks)

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        if self.start_state is not None:
            loop.model.load_state_dict(self.start_state)
        self._hard = HardMasks.apply(loop.model, self.masks, scale=self.mask_scale)

    def must_learn(self, phase: int) -> bool:
        return False  # a ticket (or a control) that cannot train at its sparsity is a result

    def make_optimizers(self, loop: TrainingLoop, phase: int) -> list[torch.optim.Optimizer]:
        optimizers = super().make_optimizers(loop, phase)
        # HardMasks realises a scale through the gradient, which equals training W only for (momentum) SGD
        # with coupled weight decay: refuse anything else rather than silently train another procedure.
        if self.mask_scale != 1.0 and not all(type(o) is torch.optim.SGD for o in optimizers):
            raise UserError(f"{self.label}: mask_scale {self.mask_scale:g} needs plain SGD optimisers, got "
                            f"{', '.join(type(o).__name__ for o in optimizers)}")
        return optimizers

    def resume(self, loop: TrainingLoop) -> None:
        # Weights in the checkpoint are already masked and scaled: only the gradient hooks are re-registered.
        self._hard = HardMasks.apply(loop.model, self.masks, scale=self.mask_scale, weights_scaled=True)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        return {"remaining_weights": self._remaining.remaining_weights, "sparsity": self._remaining.sparsity}
