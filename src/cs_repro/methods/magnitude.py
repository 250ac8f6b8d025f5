"""One-shot global magnitude pruning of a trained dense network, with rewinding or fine-tuning (Renda et al. 2020).

A dense network is trained for E epochs (`DenseTraining`, saving the rewind point after epoch k exactly
as IMP's level 0 does: same seed -> same weights). Its final weights are pruned once, globally, to a
target sparsity (`one_shot_masks`: the round((1-s)*N) largest |w| across all prunable tensors). Then
  (a) rewinding: the mask with the rewind-point weights is a ticket, retrained for E epochs
      (`cs_repro.methods.retrain.TicketRetrain` via `experiment.run_retrain`; method `magnitude_rewind`);
  (b) fine-tuning: the pruned *trained* weights train on for E_ft epochs at the schedule's final lr
      (`TicketRetrain` started from the final state; method `magnitude_finetune`, variant `finetuned`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cs_repro.methods.imp import global_magnitude_masks
from cs_repro.methods.rounds import RewindPoint
from cs_repro.train import Hooks, TrainingLoop


def kept_count(sparsity: float, total: int) -> int:
    """Weights kept at a target sparsity: round((1 - s) * N), at least 1."""
    return max(1, round((1.0 - sparsity) * total))


@torch.no_grad()
def one_shot_masks(weights: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Global magnitude pruning of dense weights to exactly kept_count(sparsity, N) weights."""
    ones = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    return global_magnitude_masks(weights, ones, kept_count(sparsity, sum(w.numel() for w in weights.values())))


class DenseTraining(Hooks):
    """Dense training that records the rewind point (after epoch k; k = 0: the initialisation)."""

    label = "dense"

    def __init__(self, rewind_epoch: int) -> None:
        self.rewind = RewindPoint(rewind_epoch)

    @property
    def rewind_state(self) -> dict[str, Tensor] | None:
        return self.rewind.state

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        self.rewind.at_phase_start(loop, phase)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        self.rewind.at_epoch_end(loop, phase, epoch)
        return {"remaining_weights": 1.0, "sparsity": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewind.state = state["rewind_state"]
