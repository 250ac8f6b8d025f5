"""One-shot global magnitude pruning of a trained dense network, with rewinding or fine-tuning (Renda et al. 2020).

A dense network is trained for E epochs (`DenseTraining`, saving the rewind point after epoch k exactly
as IMP's level 0 does: same seed -> same weights). Its final weights are pruned once, globally, to a
target sparsity (`one_shot_masks`: the round((1-s)*N) largest |w| across all prunable tensors). Then
  (a) rewinding: the mask with the rewind-point weights is a ticket, retrained for E epochs
      (`cs_repro.methods.retrain.TicketRetrain` via `retrain_ticket`; method `magnitude_rewind`);
  (b) fine-tuning: the pruned *trained* weights train on for E_ft epochs at the schedule's final lr
      (`TicketRetrain` started from the final state; method `magnitude_finetune`, variant `finetuned`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cs_repro.methods.budgets import layer_kept_counts
from cs_repro.errors import UserError
from cs_repro.io import atomic_torch_save, safe_torch_load
from cs_repro.masks import plain_state_dict
from cs_repro.methods.imp import global_magnitude_masks
from cs_repro.methods.retrain import TicketRetrain, retrain_ticket
from cs_repro.methods.rounds import RewindPoint
from cs_repro.param_fields import param
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, last_epoch_row, make_model,
                          network_config, sub_dir, ticket_digest, ticket_metadata)
from cs_repro.tickets import Ticket, save_ticket
from cs_repro.train import Hooks, TrainingLoop

if TYPE_CHECKING:
    from cs_repro.params import Params


@dataclass
class MagnitudeParams:
    """One-shot global magnitude pruning of a trained dense network (Renda et al. 2020)."""

    finetune_epochs: int = param(0, "fine-tuning epochs at the final lr; 0 = the network's epochs E", min=0)
    rewind: bool = param(True, "also retrain each pruned mask from the rewind point (method magnitude_rewind, the "
                               "ticket track) and, with controls.random, its random control; false: fine-tuning only "
                               "(the pruning track, as the imagenet profile)")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"magnitude": MagnitudeParams}


def kept_count(sparsity: float, total: int) -> int:
    """Weights kept at a target sparsity: round((1 - s) * N), at least 1."""
    return max(1, round((1.0 - sparsity) * total))


@torch.no_grad()
def one_shot_masks(weights: dict[str, Tensor], sparsity: float, budget: str = "global") -> dict[str, Tensor]:
    """Magnitude pruning of dense weights to exactly kept_count(sparsity, N) weights: ranked across all
    tensors (budget 'global'), or within each tensor to its count under a layer budget (`cs_repro.methods.budgets`)."""
    ones = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    if budget == "global":
        return global_magnitude_masks(weights, ones, kept_count(sparsity, sum(w.numel() for w in weights.values())))
    counts = layer_kept_counts(budget, {n: tuple(w.shape) for n, w in weights.items()}, sparsity)
    return {n: global_magnitude_masks({n: w}, {n: ones[n]}, counts[n])[n] for n, w in weights.items()}


class DenseTraining(Hooks):
    """Dense training that records the rewind point (after epoch k; k = 0: the initialisation)."""

    label = "dense"

    def __init__(self, rewind_epoch: int, rewind_iteration: int = 0) -> None:
        self.rewind = RewindPoint(rewind_epoch, rewind_iteration)

    @property
    def rewind_state(self) -> dict[str, Tensor] | None:
        return self.rewind.state

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        self.rewind.at_phase_start(loop, phase)

    def after_step(self, loop: TrainingLoop, phase: int, step: int) -> None:
        self.rewind.at_step(loop, phase, step)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        self.rewind.at_epoch_end(loop, phase, epoch)
        return {"remaining_weights": 1.0, "sparsity": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewind.state = state["rewind_state"]


# --- one-shot pruning as a stage runs it ----------------------------------------------------------

DENSE_FORMAT = "cs-repro-dense/1"


def run_magnitude_dense(params: Params, network: str, seed: int, out_dir: Path, device: torch.device,
                        checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> None:
    """Train the dense network (as IMP's level 0: same seed, same weights) and keep its final weights and
    rewind point in dense.pt. No result rows: IMP's level 0 is the dense reference."""
    net = params.network(network)
    run = RunSpec("magnitude_dense", network, seed, "", {"rewind_epoch": net.rewind_epoch,
                                                          "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    hooks = DenseTraining(net.rewind_epoch, net.rewind_iteration)
    history = training.train(run, hooks)
    atomic_torch_save({"format": DENSE_FORMAT, "final_state": plain_state_dict(training.model),
                       "rewind_state": hooks.rewind_state,
                       "metadata": {"network": network, "model": net.model, "seed": seed, "epochs": net.epochs,
                                    "rewind_epoch": net.rewind_epoch}}, Path(out_dir) / "dense.pt")
    training.finish(out_dir, final_metrics(history))


def run_magnitude(params: Params, network: str, sparsity: float, seed: int, dense_dir: Path, out_dir: Path,
                  device: torch.device, checkpoint_dir: Path | None = CHECKPOINT_DIR,
                  timing_dir: Path | None = None, budget: str = "global") -> Ticket:
    """One-shot magnitude pruning of the trained dense network to `sparsity`, globally or to a layer budget:
    ticket.pt (method magnitude_rewind) retrained in out/retrain/{rewind,random}; the pruned trained weights
    fine-tuned for magnitude.finetune_epochs at the final lr in out/finetune (method magnitude_finetune).
    With a layer budget (uniform, erk) the methods are magnitude_rewind_<budget>, magnitude_finetune_<budget>."""
    suffix = "" if budget == "global" else f"_{budget}"
    net = params.network(network)
    dense = safe_torch_load(Path(dense_dir) / "dense.pt", "dense network")
    if dense.get("format") != DENSE_FORMAT or dense["metadata"].get("model") != net.model or dense["metadata"].get("seed") != seed:
        raise UserError(f"{dense_dir}/dense.pt is not the dense {net.model} of seed {seed}: rerun magnitude_dense")
    setting = f"sparsity={sparsity:g}"
    _, names = make_model(net, seed, torch.device("cpu"))
    masks = one_shot_masks({n: dense["final_state"][n] for n in names}, sparsity, budget)
    config = {"sparsity": sparsity, "dense": str(dense_dir), "network": network_config(params, network)}
    if budget != "global":
        config["layer_budget"] = budget
    ticket = Ticket(masks, dense["rewind_state"], ticket_metadata(f"magnitude_rewind{suffix}", network, net, seed, setting,
                                                                config, net.epochs, target_sparsity=sparsity)).with_counts()
    ticket_path = Path(out_dir) / "ticket.pt"
    save_ticket(ticket, ticket_path)

    # (b) fine-tuning the pruned trained weights at the schedule's final learning rate.
    ft_epochs = params.magnitude.finetune_epochs or net.epochs
    final_lr = net.lr * net.lr_gamma ** len(net.lr_milestones)
    ft_net = dataclasses.replace(net, epochs=ft_epochs, lr=final_lr, lr_milestones=[], rewind_epoch=0, warmup_epochs=0)
    ft_params = dataclasses.replace(params, networks={**params.networks, network: ft_net})
    run = RunSpec(f"magnitude_finetune{suffix}", network, seed, setting, {
        "ticket": ticket_digest(ticket_path), "finetune_epochs": ft_epochs, "lr": final_lr,
        "network": network_config(params, network)})
    # The split depends only on fields fine-tuning leaves alone (dataset, subsets, batch size).
    training = TrainingRun(ft_params, network, seed, device, checkpoint_dir, sub_dir(timing_dir, "finetune"))
    hooks = TicketRetrain({k: v.to(device) for k, v in masks.items()}, dense["final_state"], label=run.method)
    history = training.train(run, hooks)
    rows = [last_epoch_row(run.method, "finetuned", "pruning", seed, setting, ticket.metadata, history[-1], net.epochs,
                           ft_epochs, ticket_path, Path(out_dir) / "finetune")]
    training.finish(Path(out_dir) / "finetune",
                    final_metrics(history, remaining_weights=ticket.metadata["remaining_weights"], retrain_epochs=ft_epochs),
                    {"result_rows": rows})

    # (a) rewinding: the ticket retrained from the rewind point, and its random control.
    if not params.magnitude.rewind:
        return ticket
    retrain_ticket(params, ticket_path, ("rewind", "random"), Path(out_dir) / "retrain", device, checkpoint_dir,
                   sub_dir(timing_dir, "retrain"))
    return ticket
