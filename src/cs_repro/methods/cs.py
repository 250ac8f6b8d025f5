"""Continuous Sparsification ticket search (Savarese, Silva, Maire 2020).

Here live the CS temperature schedule (`temperature_at`), the between-round clamp (`clamp_between_rounds`)
and the search itself (`CSSearch`). The soft mask and its penalty are in `cs_repro.masks`.

Per round of E epochs: beta = beta_T^(e/(E-1)) in epoch e (1 in the first, beta_T in the last);
loss = CE + lambda * sum sigmoid(beta*s)/sigmoid(s0). Between rounds the weights are kept, beta goes back
to 1 and the logits are clamped. The ticket is mask = (s > 0) after the last round, with the weights of
the rewind point (epoch k of round 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cs_repro.errors import UserError
from cs_repro.masks import HardMasks, SoftMasks, sparsity_of
from cs_repro.methods.rounds import MaskRounds
from cs_repro.param_fields import FLOAT32_MAX, check_s0, param
from cs_repro.results import run_row
from cs_repro.run import CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, network_config, prunable_sizes
from cs_repro.tickets import Ticket, save_ticket
from cs_repro.train import TrainingLoop, make_sgd

if TYPE_CHECKING:
    from cs_repro.params import Params


log = logging.getLogger("cs_repro")


@dataclass
class CSParams:
    """Continuous Sparsification search (the per-run s0 comes from sweep.s0)."""

    rounds: int = param(3, "number of CS rounds (weights are not rewound between rounds)", min=1)
    beta_final: float = param(200.0, "beta_T: temperature in the last epoch of each round", min=1.0)
    mask_lr: float = param(0.0, "lr of the mask logits; 0 = same as the weights' lr", min=0.0)
    clamp_rule: str = param("paper", "between rounds: 'paper' s <- min(beta_T*s, s0); 'released' s <- min(s, s0)",
                            choices=("paper", "released"))
    mask_scale: str = param("binary", "what a ticket is when retrained from the rewind point: 'binary' (the paper's "
                                      "mask times the rewound weights), 'released' (binary / sigmoid(s0) in every "
                                      "forward pass, as the released code) or 'folded' (the rewound weights / "
                                      "sigmoid(s0) once, then a plain binary mask)",
                            choices=("binary", "released", "folded"))

    def check_against(self, params: Params) -> None:
        """lambda's range as CS uses it: its penalty, lambda * sum(sigmoid(beta*s)) / sigmoid(s0), reaches up
        to lambda * N / sigmoid(s0) (N the prunable weights) and must stay a float32 number."""
        s0 = min(params.sweep.s0)
        for network in params.sweep.networks:
            weights = sum(prunable_sizes(params.network(network)).values())
            largest = params.lambda_ * weights * (1.0 + math.exp(-s0))  # / sigmoid(s0)
            if largest > FLOAT32_MAX:
                raise UserError(f"lambda={params.lambda_:g} makes CS's penalty on {network} (up to lambda x "
                                f"{weights:,} weights / sigmoid(s0={s0:g}) = {largest:.3g}) overflow float32; the "
                                "paper's values are around 1e-8")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"cs": CSParams}


@dataclass(frozen=True)
class CSConfig:
    s0: float
    lambda_: float  # lambda in params.yaml: the weight of the mask penalty in the loss (see CSSearch.loss)
    beta_final: float = 200.0
    rounds: int = 3
    mask_lr: float = 0.0  # 0: the weights' lr
    clamp_rule: str = "paper"  # or "released"
    rewind_epoch: int = 1
    rewind_iteration: int = 0  # > 0: the rewind point in optimiser steps instead


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
        super().__init__(config.rounds, config.rewind_epoch, config.rewind_iteration)
        self.masks = masks
        self.config = config
        masks.fuse_penalty(config.lambda_)

    def loss(self, loop: TrainingLoop, logits: Tensor, labels: Tensor) -> Tensor:
        """CS's objective: cross_entropy + lambda * masks.penalty(), with penalty() = sum of
        sigmoid(beta*s)/sigmoid(s0) over every mask entry. Only the cross-entropy is computed here: the
        penalty's gradient, lambda * d(penalty)/ds, is added inside each soft mask's backward pass
        (`fuse_penalty` above), which saves a second pass over every mask; adding the term here as well
        would count it twice. Its value is logged each epoch (`mask_penalty`)."""
        return super().loss(loop, logits, labels)

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


# --- the search as a stage runs it ---------------------------------------------------------------


def run_cs_search(params: Params, network: str, s0: float, seed: int, out_dir: Path, device: torch.device,
                  checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None,
                  method: str = "cs", setting: str | None = None) -> Ticket:
    """One CS search: writes ticket.pt, metrics.json (search curve + pruning-track accuracy), timing.json.
    `method` and `setting` name its rows (another method may run CS under its own name, e.g. cs_sensitivity)."""
    net = params.network(network)
    check_s0(s0, "--s0")
    config = CSConfig(
        s0=s0, lambda_=params.lambda_, beta_final=params.cs.beta_final, rounds=params.cs.rounds,
        mask_lr=params.cs.mask_lr, clamp_rule=params.cs.clamp_rule, rewind_epoch=net.rewind_epoch,
        rewind_iteration=net.rewind_iteration,
    )
    run = RunSpec(method, network, seed, setting or f"s0={s0:g}", {"cs": asdict(config), "mask_scale": params.cs.mask_scale,
                                                       "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    masks = SoftMasks.attach(training.model, training.prunable, s0)
    hooks = CSSearch(masks, config)
    history = training.train(run, hooks)
    binary = masks.binary_masks()
    mask_scale = mask_scale_for(params.cs.mask_scale, s0)
    ticket = Ticket(binary, hooks.rewind_state, {
        "method": method, "network": network, "model": net.model, "dataset": net.dataset, "seed": seed,
        "setting": run.setting, "s0": s0, "params": run.config, "rewind_epoch": net.rewind_epoch,
        "search_epochs": config.rounds * net.epochs, "mask_scale": mask_scale,
        "weight_scale": weight_scale_for(params.cs.mask_scale, s0),
    }).with_counts()
    # Pruning track: the searched network at its own trained weights with the binary mask, no retraining.
    masks.detach()
    # The searched network computes with W * sigmoid(beta_T*s)/sigmoid(s0), i.e. W * mask / sigmoid(s0) once beta_T is large.
    HardMasks.apply(training.model, binary, scale=mask_scale_for("released", s0)).remove()
    pruned = training.evaluate()
    save_ticket(ticket, out_dir / "ticket.pt")
    rows = [run_row(method=method, variant="pruned", track="pruning", seed=seed, setting=run.setting,
                    ticket_metadata=ticket.metadata, test_accuracy=pruned["test_accuracy"],
                    val_accuracy=pruned["val_accuracy"], search_epochs=config.rounds * net.epochs, retrain_epochs=0,
                    ticket_file=out_dir / "ticket.pt", run_dir=out_dir)]
    training.finish(out_dir, final_metrics(
        history, remaining_weights=ticket.metadata["remaining_weights"], layer_remaining=ticket.metadata["layer_remaining"],
        search_epochs=config.rounds * net.epochs,
    ), {"pruned": pruned, "result_rows": rows})
    log.info("%s: ticket keeps %.2f%% of prunable weights; pruned network test %.2f%%",
             run.label(), 100 * ticket.metadata["remaining_weights"], 100 * pruned["test_accuracy"])
    return ticket


def mask_scale_for(rule: str, s0: float) -> float:
    """'binary' (paper) and 'folded': 1. 'released': the released code multiplies the binary mask by
    1/sigmoid(s0) in every forward pass."""
    return 1.0 + math.exp(-s0) if rule == "released" else 1.0


def weight_scale_for(rule: str, s0: float) -> float:
    """'folded': the rewound weights are multiplied once by 1/sigmoid(s0), the value the search's kept gates
    sigmoid(beta*s)/sigmoid(s0) reach once their logits have grown; 1 otherwise."""
    return 1.0 + math.exp(-s0) if rule == "folded" else 1.0
