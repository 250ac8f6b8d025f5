"""Iterative Magnitude Pruning with rewinding (Frankle et al. 2019/2020), and IMP-C.

Here lives the global magnitude threshold (`global_magnitude_masks`). Level 0 trains the dense
network from initialisation, saving the rewind point after epoch k. Each later level removes the
fraction p of the remaining prunable weights with the smallest |w|, ranked across all prunable layers
together, resets the survivors to the rewind point and trains again: training level l *is* the
retraining of ticket l, so its accuracy is that ticket's accuracy and nothing is trained twice.

IMP-C (our reading of the paper's variant): the same pruning schedule, but the search continues from
the pruned, trained weights instead of rewinding; its tickets (mask + rewind point) are evaluated by
retraining them separately.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cs_repro.errors import UserError
from cs_repro.io import atomic_write_json
from cs_repro.masks import HardMasks, sparsity_of
from cs_repro.methods.rounds import RewindPoint
from cs_repro.param_fields import check_listed, param
from cs_repro.results import run_row
from cs_repro.run import CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, network_config, prunable_sizes
from cs_repro.tickets import Ticket, save_ticket
from cs_repro.train import Hooks, Phase, TrainingLoop

if TYPE_CHECKING:
    from cs_repro.params import Params


log = logging.getLogger("cs_repro")


@dataclass
class IMPParams:
    """Iterative magnitude pruning with rewinding (global magnitude, fraction per level)."""

    prune_fraction: float = param(0.2, "p: fraction of the remaining prunable weights removed per level",
                                  min_exclusive=0.0, max_exclusive=1.0)
    levels: int = param(14, "L: pruning levels after the dense run", min=1)
    networks: list[str] = param([], "keys of `networks` IMP runs on (stages imp_search, imp_controls), each in "
                                    "sweep.networks; the profiles set ${sweep.networks} ([] = no IMP, as the imagenet "
                                    "profile: its pruning comparison has no ticket track)")

    def check_against(self, params: Params) -> None:
        check_listed("imp.networks", self.networks, params.sweep.networks, "sweep.networks")
        for network in self.networks:
            check_levels("imp.levels", self.levels, self.prune_fraction, network, params)


@dataclass
class IMPCParams:
    """IMP-C (our reading): IMP's schedule without rewinding between levels during the search; its
    seeds and pruning fraction are IMP's."""

    networks: list[str] = param([], "keys of `networks` IMP-C runs on, each in sweep.networks ([] = no IMP-C stages)")
    levels: int = param(18, "pruning levels after the dense run", min=1)

    def check_against(self, params: Params) -> None:
        check_listed("imp_c.networks", self.networks, params.sweep.networks, "sweep.networks")
        for network in self.networks:
            check_levels("imp_c.levels", self.levels, params.imp.prune_fraction, network, params)


def check_levels(key: str, levels: int, prune_fraction: float, network: str, params: Params) -> None:
    """Refuse a level count that goes past the level where fewer weights remain than there are prunable
    tensors: from there some tensor is empty for sure and each further level trains at chance (a tensor
    that empties earlier, through the global ranking, is a warning when it happens: `IMPSearch`)."""
    sizes = prunable_sizes(params.network(network))
    total, tensors = sum(sizes.values()), len(sizes)
    level = next((level for level in range(1, levels + 1) if remaining_after(level, total, prune_fraction) < tensors),
                 None)
    if level is not None:
        raise UserError(f"{key}={levels} goes past level {level}, where IMP keeps "
                        f"{remaining_after(level, total, prune_fraction)} of {network}'s {total:,} prunable weights, "
                        f"fewer than its {tensors} prunable tensors: a tensor is then empty and every further level "
                        f"trains at chance; set {key} to at most {level - 1}")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"imp": IMPParams, "imp_c": IMPCParams}


@dataclass(frozen=True)
class IMPConfig:
    prunable: tuple[str, ...]
    prune_fraction: float = 0.2
    levels: int = 14
    rewind_epoch: int = 1
    rewind_between_levels: bool = True  # False: IMP-C
    rewind_iteration: int = 0  # > 0: the rewind point in optimiser steps instead


def remaining_after(level: int, total: int, prune_fraction: float) -> int:
    """Weights kept at level l: round((1-p)^l * N), never fewer than 1."""
    return max(1, round((1.0 - prune_fraction) ** level * total))


@torch.no_grad()
def global_magnitude_masks(weights: dict[str, Tensor], current: dict[str, Tensor], keep: int) -> dict[str, Tensor]:
    """Keep the `keep` largest |w| among the currently kept weights, ranked across all tensors together.

    Already-pruned weights are never revived. Exactly `keep` weights survive (ties are broken by
    position, deterministically)."""
    names = list(weights)
    scores = torch.cat([
        torch.where(current[n].to(weights[n].device), weights[n].abs(), torch.full_like(weights[n], -1.0)).flatten()
        for n in names
    ]).float()
    kept_now = int(sum(int(current[n].sum()) for n in names))
    if keep > kept_now:
        raise ValueError(f"cannot keep {keep} weights: only {kept_now} remain")
    order = torch.argsort(scores, descending=True, stable=True)
    flat = torch.zeros_like(scores, dtype=torch.bool)
    flat[order[:keep]] = True
    masks, offset = {}, 0
    for n in names:
        size = weights[n].numel()
        masks[n] = flat[offset:offset + size].view_as(weights[n]).cpu()
        offset += size
    return masks


class IMPSearch(Hooks):
    """Hooks for IMP (and IMP-C): phase 0 is the dense run, phase l the training at level l."""

    def __init__(self, config: IMPConfig) -> None:
        self.config = config
        self.label = "imp" if config.rewind_between_levels else "imp_c"
        self.rewind = RewindPoint(config.rewind_epoch, config.rewind_iteration)
        self.masks: dict[str, Tensor] | None = None
        self.level_masks: list[dict[str, Tensor]] = []  # the ticket of every level, 0 = dense
        self._hard: HardMasks | None = None

    @property
    def rewind_state(self) -> dict[str, Tensor] | None:
        return self.rewind.state

    def phases(self, loop: TrainingLoop) -> list[Phase]:
        return [Phase("dense", loop.epochs)] + [
            Phase(f"level {level}/{self.config.levels}", loop.epochs) for level in range(1, self.config.levels + 1)
        ]

    def must_learn(self, phase: int) -> bool:
        return phase == 0  # the dense run must train; a pruned level at chance is that ticket's result

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        params = dict(loop.model.named_parameters())
        if phase == 0:
            self.masks = {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in self.config.prunable}
            self.level_masks = [self.masks]
            self.rewind.at_phase_start(loop, phase)
            return
        total = sum(m.numel() for m in self.masks.values())
        keep = remaining_after(phase, total, self.config.prune_fraction)
        emptied_before = {n for n, m in self.masks.items() if not m.any()}
        self.masks = global_magnitude_masks({n: params[n] for n in self.config.prunable}, self.masks, keep)
        self.level_masks.append(self.masks)
        for name in sorted(n for n, m in self.masks.items() if not m.any() and n not in emptied_before):
            log.warning("%s: level %d leaves %s with no weights; the network may not learn from this level on "
                        "(%d levels set)", loop.run_label, phase, name, self.config.levels)
        if self.config.rewind_between_levels:
            loop.model.load_state_dict(self.rewind_state)
        self._apply(loop)

    def _apply(self, loop: TrainingLoop) -> None:
        if self._hard is not None:
            self._hard.remove()
        self._hard = HardMasks.apply(loop.model, self.masks)

    def after_step(self, loop: TrainingLoop, phase: int, step: int) -> None:
        self.rewind.at_step(loop, phase, step)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        self.rewind.at_epoch_end(loop, phase, epoch)
        report = sparsity_of(self.masks)
        return {"level": phase, "remaining_weights": report.remaining_weights, "sparsity": report.sparsity}

    def state_dict(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind.state, "level_masks": self.level_masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewind.state = state["rewind_state"]
        self.level_masks = state["level_masks"]
        self.masks = self.level_masks[-1] if self.level_masks else None

    def resume(self, loop: TrainingLoop) -> None:
        if self.masks is not None and len(self.level_masks) > 1:
            self._apply(loop)


# --- the search as a stage runs it ---------------------------------------------------------------


def run_imp(params: Params, network: str, seed: int, out_dir: Path, device: torch.device,
            continue_search: bool = False, checkpoint_dir: Path | None = CHECKPOINT_DIR,
            timing_dir: Path | None = None) -> list[Ticket]:
    """IMP (or IMP-C): writes tickets/level_XX.pt, metrics.json (every level's training), timing.json."""
    net = params.network(network)
    levels = params.imp_c.levels if continue_search else params.imp.levels
    method = "imp_c" if continue_search else "imp"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    config = IMPConfig(tuple(training.prunable), params.imp.prune_fraction, levels, net.rewind_epoch, not continue_search,
                       net.rewind_iteration)
    run = RunSpec(method, network, seed, "", {"imp": asdict(config), "network": network_config(params, network)})
    hooks = IMPSearch(config)
    history = training.train(run, hooks)
    tickets, level_rows, result_rows = [], [], []
    for level, masks in enumerate(hooks.level_masks):
        rows = [r for r in history if r.phase == level]
        search_epochs = (level + 1) * net.epochs
        ticket = Ticket(masks, hooks.rewind_state, {
            "method": method, "network": network, "model": net.model, "dataset": net.dataset, "seed": seed,
            "setting": f"level={level}", "level": level, "params": run.config, "rewind_epoch": net.rewind_epoch,
            "search_epochs": search_epochs, "mask_scale": 1.0,
        }).with_counts()
        ticket_file = out_dir / "tickets" / f"level_{level:02d}.pt"
        save_ticket(ticket, ticket_file)
        tickets.append(ticket)
        # IMP's level training *is* the rewind retraining of the level's ticket (and level 0 is the dense
        # network); IMP-C's levels continue from trained weights, so they are pruning-track results.
        accuracy = dict(seed=seed, ticket_metadata=ticket.metadata, test_accuracy=rows[-1].test_accuracy,
                        val_accuracy=rows[-1].val_accuracy, search_epochs=search_epochs, retrain_epochs=net.epochs,
                        ticket_file=ticket_file, run_dir=out_dir)
        if continue_search:
            result_rows.append(run_row(method="imp_c", variant="pruned", track="pruning", setting=f"level={level}", **accuracy))
        else:
            result_rows.append(run_row(method="imp", variant="rewind", track="ticket", setting=f"level={level}", **accuracy))
            if level == 0:
                result_rows.append(run_row(method="dense", variant="rewind", track="ticket", setting="dense", **accuracy))
        level_rows.append({
            "level": level, "setting": f"level={level}", "remaining_weights": ticket.metadata["remaining_weights"],
            "layer_remaining": ticket.metadata["layer_remaining"], "test_accuracy": rows[-1].test_accuracy,
            "val_accuracy": rows[-1].val_accuracy, "search_epochs": search_epochs,
            "search_seconds": sum(training.loop.epoch_seconds[: (level + 1) * net.epochs]),
        })
    training.finish(out_dir, final_metrics(history, remaining_weights=tickets[-1].metadata["remaining_weights"]),
                    {"levels": [{k: v for k, v in row.items() if k != "search_seconds"} for row in level_rows],
                     "result_rows": result_rows})
    atomic_write_json({"levels": [{"level": r["level"], "search_seconds": r["search_seconds"]} for r in level_rows]},
                      (timing_dir or out_dir) / "level_timing.json")
    return tickets
