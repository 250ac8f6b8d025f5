"""Continuous Sparsification ticket search (Savarese, Silva, Maire 2020).

Here live the CS temperature schedule (`temperature_at`), the between-round clamp (`clamp_between_rounds`)
and the search itself (`CSSearch`). The soft mask and its penalty are in `cs_repro.masks`.

Per round of E epochs: beta = beta_T^(e/(E-1)) in epoch e (1 in the first, beta_T in the last);
loss = CE + lambda * sum sigmoid(beta*s)/sigmoid(s0). Between rounds the weights are kept, beta goes back
to 1 and the logits are clamped. The ticket is mask = (s > 0) after the last round, with the weights of
the rewind point (epoch k of round 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cs_repro.masks import SoftMasks, sparsity_of
from cs_repro.methods.rounds import MaskRounds
from cs_repro.train import TrainingLoop, make_sgd


@dataclass(frozen=True)
class CSConfig:
    s0: float
    penalty_weight: float  # lambda
    beta_final: float = 200.0
    rounds: int = 3
    mask_lr: float = 0.0  # 0: the weights' lr
    clamp_rule: str = "paper"  # or "released"
    rewind_epoch: int = 1


def temperature_at(epoch: int, epochs: int, beta_final: float) -> float:
    """beta in epoch `epoch` (0-based) of a round: 1 in the first, multiplied by beta_T^(1/(E-1)) each
    later epoch, beta_T in the last. Closed form, so no rounding drift accumulates."""
    if epochs <= 1:
        return float(beta_final)
    return float(beta_final) ** (epoch / (epochs - 1))


def clamp_between_rounds(masks: SoftMasks, s0: float, beta_final: float, rule: str) -> None:
    """Paper (Algorithm 1): s <- min(beta_T * s, s0). Released code: beta is reset to 1 before the
    rescaling, so it applies s <- min(s, s0)."""
    if rule == "paper":
        masks.clamp_logits(upper=s0, multiply_by=beta_final)
    elif rule == "released":
        masks.clamp_logits(upper=s0, multiply_by=1.0)
    else:
        raise ValueError(f"unknown clamp rule {rule!r}")


class CSSearch(MaskRounds):
    """Hooks that turn the training loop into a CS search (rounds, rewind point, optimisers: `MaskRounds`)."""

    label = "cs"

    def __init__(self, masks: SoftMasks, config: CSConfig) -> None:
        super().__init__(config.rounds, config.rewind_epoch)
        self.masks = masks
        self.config = config
        masks.fuse_penalty(config.penalty_weight)

    def mask_parameters(self):
        return self.masks.logits()

    def make_mask_optimizer(self, loop: TrainingLoop):
        # SGD like the weights' (momentum, Nesterov) but without weight decay.
        return make_sgd(self.masks.logits(), self.config.mask_lr or loop.optim.lr, loop.optim, weight_decay=0.0)

    def begin_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> None:
        self.masks.set_temperature(temperature_at(epoch, loop.epochs, self.config.beta_final))

    def epoch_report(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        report = sparsity_of(self.masks.binary_masks())
        return {
            "temperature": self.masks.temperature,
            "remaining_weights": report.remaining_weights,
            "sparsity": report.sparsity,
            "mask_penalty": self.masks.penalty_value(),
        }

    def end_phase(self, loop: TrainingLoop, phase: int) -> None:
        if phase + 1 < self.config.rounds:
            clamp_between_rounds(self.masks, self.config.s0, self.config.beta_final, self.config.clamp_rule)
