"""The CS ablations reviewer 1 asked for, as searches and their rewind retraining:

  cs_beta1            CS with beta = 1 in every epoch, mask = sigmoid(s) > ablations.beta1_threshold after training
  cs_released_clamp   CS with the released code's between-round clamp s <- min(s, s0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cs_repro.errors import UserError
from cs_repro.masks import HardMasks, SoftMasks
from cs_repro.methods.cs import CSConfig, CSSearch, mask_scale_for, weight_scale_for
from cs_repro.methods.retrain import retrain_ticket
from cs_repro.param_fields import check_listed, check_s0, param
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, last_epoch_row, network_config, sub_dir,
                          ticket_metadata)
from cs_repro.tickets import Ticket, save_ticket

if TYPE_CHECKING:
    from cs_repro.params import Params


@dataclass
class AblationParams:
    """CS ablations asked for by reviewer 1."""

    s0: list[float] = param([0.0], "s0 of the CS tickets the ablations run at or start from (cs_beta1, "
                                   "cs_released_clamp, gmp_cs_layers, cs_random_control), on baselines.networks x "
                                   "sweep.seeds; each in sweep.s0")
    beta1_threshold: float = param(0.5, "cs_beta1: keep a weight when sigmoid(s) exceeds this after training",
                                   min_exclusive=0.0, max_exclusive=1.0)

    def check_against(self, params: Params) -> None:
        check_listed("ablations.s0", self.s0, params.sweep.s0, "sweep.s0", "the ablations need the CS tickets there")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"ablations": AblationParams}

CS_ABLATIONS = ("cs_beta1", "cs_released_clamp")


def run_cs_ablation(params: Params, name: str, network: str, s0: float, seed: int, out_dir: Path, device: torch.device,
                    checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """cs_beta1: CS with beta = 1 in every epoch, mask = sigmoid(s) > ablations.beta1_threshold after training.
    cs_released_clamp: CS with the released code's between-round clamp s <- min(s, s0).
    Writes out/search/{ticket.pt, metrics.json} (pruned-network row) and retrains the ticket in out/retrain/rewind."""
    if name not in CS_ABLATIONS:
        raise UserError(f"unknown CS ablation {name!r}; choose one of: {', '.join(CS_ABLATIONS)}")
    check_s0(s0, "--s0")
    net = params.network(network)
    beta1 = name == "cs_beta1"
    threshold = params.ablations.beta1_threshold if beta1 else 0.5
    config = CSConfig(
        s0=s0, lambda_=params.lambda_, beta_final=1.0 if beta1 else params.cs.beta_final, rounds=params.cs.rounds,
        mask_lr=params.cs.mask_lr, clamp_rule=params.cs.clamp_rule if beta1 else "released", rewind_epoch=net.rewind_epoch,
        rewind_iteration=net.rewind_iteration,
    )
    setting = f"s0={s0:g}"
    run = RunSpec(name, network, seed, setting, {"cs": asdict(config), "threshold": threshold,
                                                 "mask_scale": params.cs.mask_scale, "network": network_config(params, network)})
    search_dir = Path(out_dir) / "search"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, sub_dir(timing_dir, "search"))
    masks = SoftMasks.attach(training.model, training.prunable, s0)
    hooks = CSSearch(masks, config)
    history = training.train(run, hooks)
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(s) > t  <=>  s > logit(t), without rounding
    binary = {n: (logits > cut).cpu() for n, logits in masks.state_dict().items()}
    search_epochs = config.rounds * net.epochs
    ticket = Ticket(binary, hooks.rewind_state, ticket_metadata(
        name, network, net, seed, setting, run.config, search_epochs, s0=s0, threshold=threshold,
        mask_scale=mask_scale_for(params.cs.mask_scale, s0), weight_scale=weight_scale_for(params.cs.mask_scale, s0),
    )).with_counts()
    save_ticket(ticket, search_dir / "ticket.pt")
    # Pruning track as for CS: the trained weights with the binary mask, scaled by 1/sigmoid(s0).
    masks.detach()
    HardMasks.apply(training.model, {n: m.to(device) for n, m in binary.items()},
                    scale=mask_scale_for("released", s0)).remove()
    pruned = training.evaluate()
    last = dataclasses.replace(history[-1], **pruned)
    rows = [last_epoch_row(name, "pruned", "pruning", seed, setting, ticket.metadata, last, search_epochs, 0,
                           search_dir / "ticket.pt", search_dir)]
    training.finish(search_dir, final_metrics(history, remaining_weights=ticket.metadata["remaining_weights"],
                                       layer_remaining=ticket.metadata["layer_remaining"], search_epochs=search_epochs),
                    {"result_rows": rows, "pruned": pruned})
    retrain_ticket(params, search_dir / "ticket.pt", ("rewind",), Path(out_dir) / "retrain", device, checkpoint_dir,
                   sub_dir(timing_dir, "retrain"))
    return ticket
