"""Pieces several methods' hooks share: the rewind point, and training in rounds with mask parameters.

`RewindPoint` is the network's state after epoch k of the first phase (k = 0: the initialisation), or
after its first n optimiser steps, i.e. what a ticket rewinds to; CS, L0, IMP and the dense run of
magnitude pruning all keep one.

`MaskRounds` is the skeleton of a method that learns mask parameters next to the weights over R
rounds of E epochs (CS's logits, L0's gates): R phases, the rewind point in round 0, and two
optimisers, SGD on the weights and the method's own on its mask parameters, whose state carries
across rounds while the loop restarts the lr schedule. A subclass names its mask parameters, builds
their optimiser and adds what happens inside a round.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cs_repro.errors import UserError
from cs_repro.masks import plain_state_dict
from cs_repro.train import Hooks, Phase, TrainingLoop, make_sgd


class RewindPoint:
    """Records `plain_state_dict(model)` after epoch `epoch` of phase 0 (before training if `epoch` is 0), or,
    with `iteration` > 0, after that many optimiser steps of phase 0 (Frankle et al.'s rewind point)."""

    def __init__(self, epoch: int, iteration: int = 0) -> None:
        self.epoch = epoch
        self.iteration = iteration
        self.state: dict[str, Tensor] | None = None

    def at_phase_start(self, loop: TrainingLoop, phase: int) -> None:
        if phase == 0 and self.epoch == 0 and not self.iteration:
            self.state = plain_state_dict(loop.model)

    def at_step(self, loop: TrainingLoop, phase: int, step: int) -> None:
        if phase == 0 and self.iteration and step == self.iteration:
            self.state = plain_state_dict(loop.model)

    def at_epoch_end(self, loop: TrainingLoop, phase: int, epoch: int) -> None:
        if phase == 0 and not self.iteration and epoch + 1 == self.epoch:
            self.state = plain_state_dict(loop.model)
        if phase == 0 and self.iteration and epoch + 1 == loop.epochs and self.state is None:
            raise UserError(f"rewind_iteration={self.iteration} lies beyond the first round's "
                            f"{loop.epochs * len(loop.data.train)} optimiser steps: choose an earlier one")


class MaskRounds(Hooks):
    """Rounds of training with mask parameters; see the module docstring."""

    def __init__(self, rounds: int, rewind_epoch: int, rewind_iteration: int = 0) -> None:
        self.rounds = rounds
        self.rewind = RewindPoint(rewind_epoch, rewind_iteration)

    # --- what a subclass provides ----------------------------------------------------------------
    def mask_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def make_mask_optimizer(self, loop: TrainingLoop) -> torch.optim.Optimizer:
        """The mask parameters' optimiser; set `initial_lr` in its groups (the loop's schedule scales it)."""
        raise NotImplementedError

    def epoch_report(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        """This epoch's extra metrics (sparsity, temperature, ...)."""
        return {}

    # --- the shared skeleton -------------------------------------------------------------------
    @property
    def rewind_state(self) -> dict[str, Tensor] | None:
        return self.rewind.state

    def must_learn(self, phase: int) -> bool:
        return False  # a mask search may remove (nearly) everything: that point of the curve is a result

    def phases(self, loop: TrainingLoop) -> list[Phase]:
        return [Phase(f"round {r + 1}/{self.rounds}", loop.epochs) for r in range(self.rounds)]

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        self.rewind.at_phase_start(loop, phase)

    def make_optimizers(self, loop: TrainingLoop, phase: int) -> list[torch.optim.Optimizer]:
        if phase > 0 and loop.optimizers:
            return loop.optimizers  # optimiser state carries across rounds; only the lr schedule restarts
        mask_ids = {id(p) for p in self.mask_parameters()}
        weights = [p for p in loop.model.parameters() if id(p) not in mask_ids]
        return [make_sgd(weights, loop.optim.lr, loop.optim), self.make_mask_optimizer(loop)]

    def after_step(self, loop: TrainingLoop, phase: int, step: int) -> None:
        self.rewind.at_step(loop, phase, step)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        self.rewind.at_epoch_end(loop, phase, epoch)
        return self.epoch_report(loop, phase, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewind.state = state["rewind_state"]
