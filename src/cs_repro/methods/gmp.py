"""Gradual magnitude pruning (Zhu & Gupta 2017), the reviewers' pruning baseline.

The network trains from initialisation for E epochs; sparsity rises on the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3,   s_i = 0,

applied every dt **optimiser steps** from t0 = round(start * T) until t0 + n*dt <= round(end * T), T the
number of training steps (E epochs), n = floor(span / dt) (dt is shortened to the span if it is longer),
so the last pruning step lands exactly on s_f. (`start`, `end`: fractions of training, so the schedule
survives a change of the epoch count.) Each pruning step keeps the round((1 - s_t) * N)
largest |w| among the weights still kept, ranked across all prunable tensors together (global); with
per-layer targets (the `gmp_cs_layers` ablation) each tensor l follows its own schedule to s_f^l and is
ranked on its own. Pruned weights stay at exactly 0: HardMasks masks their gradients, and the momentum
buffers of newly pruned weights are zeroed at the pruning step.

Steps, not epochs, because the schedule is meant to be fine-grained (the paper prunes every few hundred
steps). The loop has no per-step hook, so the pruning runs as a post-step hook of the weights' optimiser;
the step count is (epoch * steps per epoch + steps done this epoch), hence deterministic and resumable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cs_repro.methods.budgets import layer_kept_counts
from cs_repro.errors import UserError
from cs_repro.masks import HardMasks, plain_state_dict, sparsity_of
from cs_repro.methods.imp import global_magnitude_masks
from cs_repro.param_fields import param
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, last_epoch_row, make_model, network_config,
                          sub_dir, ticket_metadata)
from cs_repro.tickets import Ticket, load_ticket, save_ticket
from cs_repro.train import Hooks, TrainingLoop, make_sgd

if TYPE_CHECKING:
    from cs_repro.params import Params


log = logging.getLogger("cs_repro")


@dataclass
class GMPParams:
    """Gradual magnitude pruning (Zhu & Gupta 2017): cubic schedule over optimiser steps. Start and end are
    fractions of the training so that the schedule survives a change of `networks.<net>.epochs`."""

    start: float = param(0.0, "t0 as a fraction of all training steps (E epochs): pruning starts there",
                         min=0.0, max_exclusive=1.0)
    end: float = param(0.67, "t0 + n*dt as a fraction of all training steps: the target is reached there",
                       min_exclusive=0.0, max=1.0)
    frequency: int = param(100, "dt: optimiser steps between pruning steps (shortened to the span if longer)", min=1)

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise UserError(f"gmp.start={self.start} must be less than gmp.end={self.end}")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"gmp": GMPParams}


@dataclass(frozen=True)
class GMPConfig:
    prunable: tuple[str, ...]
    target: float  # s_f over all prunable weights (the global schedule)
    start: float = 0.0  # t0 / T
    end: float = 0.67  # (t0 + n*dt) / T, at most
    frequency: int = 100  # dt, in optimiser steps
    layer_targets: tuple[tuple[str, float], ...] = ()  # per-tensor s_f^l; empty = global ranking


@dataclass(frozen=True)
class Schedule:
    t0: int
    dt: int
    n: int

    @classmethod
    def build(cls, start: float, end: float, frequency: int, total_steps: int) -> "Schedule":
        """t0 = round(start * T); the span ends at round(end * T) (at least one step after t0, within T)."""
        if not 0.0 <= start < end <= 1.0:
            raise UserError(f"gmp.start={start} and gmp.end={end} must satisfy 0 <= start < end <= 1")
        t0 = min(round(start * total_steps), max(total_steps - 1, 0))
        span = max(1, min(round(end * total_steps), total_steps) - t0)
        dt = min(frequency, span)
        return cls(t0=t0, dt=dt, n=span // dt)

    def steps(self) -> list[int]:
        """The step counts (optimiser steps done) at which pruning happens: t0 + k*dt, k = 1..n
        (k = 0 would be s_i = 0, nothing to prune)."""
        return [self.t0 + k * self.dt for k in range(1, self.n + 1)]

    def sparsity(self, step: int, final: float, initial: float = 0.0) -> float:
        """s_t of the cubic schedule (s_i before t0, s_f after t0 + n*dt)."""
        progress = min(max((step - self.t0) / (self.n * self.dt), 0.0), 1.0)
        return final + (initial - final) * (1.0 - progress) ** 3


def kept_at(sparsity: float, total: int) -> int:
    return max(1, round((1.0 - sparsity) * total))


class GMPPruning(Hooks):
    """Dense training with gradual magnitude pruning on the cubic schedule (one phase of E epochs)."""

    def __init__(self, config: GMPConfig, label: str = "gmp") -> None:
        self.config = config
        self.label = label
        self.masks: dict[str, Tensor] | None = None
        self.events: list[dict[str, Any]] = []  # one per pruning step: step, target sparsity, kept count
        self.step = 0
        self._schedule: Schedule | None = None
        self._prune_at: set[int] = set()
        self._hard: HardMasks | None = None
        layer_targets = dict(config.layer_targets)
        if layer_targets and set(layer_targets) != set(config.prunable):
            raise UserError("gmp per-layer targets must name exactly the prunable tensors "
                            f"(missing: {sorted(set(config.prunable) - set(layer_targets))})")
        for value in [config.target, *layer_targets.values()]:  # a tensor keeps at least one weight (kept_at)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"gmp target sparsity {value} must lie in [0, 1]")

    # -- the schedule
    def must_learn(self, phase: int) -> bool:
        return False  # pruning to an extreme target may leave nothing to train: a result

    def _setup(self, loop: TrainingLoop) -> None:
        self._schedule = Schedule.build(self.config.start, self.config.end, self.config.frequency,
                                        loop.epochs * len(loop.data.train))
        self._prune_at = set(self._schedule.steps())

    @property
    def schedule(self) -> Schedule:
        assert self._schedule is not None
        return self._schedule

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        params = dict(loop.model.named_parameters())
        self.masks = {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in self.config.prunable}

    def make_optimizers(self, loop: TrainingLoop, phase: int):
        self._setup(loop)
        optimizer = make_sgd([p for p in loop.model.parameters() if p.requires_grad], loop.optim.lr, loop.optim)
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self._after_step(loop, opt))
        return [optimizer]

    def begin_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> None:
        self.step = epoch * len(loop.data.train)

    def _after_step(self, loop: TrainingLoop, optimizer: torch.optim.Optimizer) -> None:
        self.step += 1
        if self.step in self._prune_at:
            self.prune(loop, optimizer, self.step)

    @torch.no_grad()
    def prune(self, loop: TrainingLoop, optimizer: torch.optim.Optimizer, step: int) -> None:
        params = dict(loop.model.named_parameters())
        layer_targets = dict(self.config.layer_targets)
        if layer_targets:
            masks = {}
            for name in self.config.prunable:
                keep = kept_at(self.schedule.sparsity(step, layer_targets[name]), params[name].numel())
                masks[name] = global_magnitude_masks({name: params[name]}, {name: self.masks[name]}, keep)[name]
        else:
            total = sum(params[n].numel() for n in self.config.prunable)
            keep = kept_at(self.schedule.sparsity(step, self.config.target), total)
            masks = global_magnitude_masks({n: params[n] for n in self.config.prunable}, self.masks, keep)
        self.masks = masks
        self._apply(loop)
        for name, mask in masks.items():  # a pruned weight's momentum would move it off 0 again
            buffer = optimizer.state.get(params[name], {}).get("momentum_buffer")
            if buffer is not None:
                buffer.mul_(mask.to(device=buffer.device, dtype=buffer.dtype))
        report = sparsity_of(masks)
        self.events.append({"step": step, "target_sparsity": self.schedule.sparsity(step, self.config.target),
                            "remaining_count": report.remaining, "sparsity": report.sparsity,
                            "layer_remaining_count": {n: kept for n, (kept, _) in report.per_layer.items()}})

    def _apply(self, loop: TrainingLoop) -> None:
        if self._hard is not None:
            self._hard.remove()
        self._hard = HardMasks.apply(loop.model, self.masks)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        report = sparsity_of(self.masks)
        return {"remaining_weights": report.remaining_weights, "sparsity": report.sparsity}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "events": self.events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = state["masks"]
        self.events = list(state["events"])

    def resume(self, loop: TrainingLoop) -> None:
        if self.masks is not None:
            self._apply(loop)


# --- GMP as a stage runs it -----------------------------------------------------------------------


def run_gmp(params: Params, network: str, sparsity: float, seed: int, out_dir: Path, device: torch.device,
            checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None,
            layer_targets: dict[str, float] | None = None, method: str = "gmp", setting: str | None = None) -> Ticket:
    """GMP from initialisation to `sparsity` (or per-layer targets): pruned.pt (mask + final weights) and
    metrics.json (the final network is the result: variant pruned, track pruning; every pruning step)."""
    net = params.network(network)
    setting = setting or f"sparsity={sparsity:g}"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    config = GMPConfig(tuple(training.prunable), sparsity, params.gmp.start, params.gmp.end, params.gmp.frequency,
                       tuple(sorted((layer_targets or {}).items())))
    run = RunSpec(method, network, seed, setting, {"gmp": asdict(config), "network": network_config(params, network)})
    hooks = GMPPruning(config, label=method)
    history = training.train(run, hooks)
    result = Ticket(hooks.masks, plain_state_dict(training.model), ticket_metadata(
        method, network, net, seed, setting, run.config, net.epochs, target_sparsity=sparsity,
        weights="final trained weights of the pruned network (not a rewind point)")).with_counts()
    save_ticket(result, out_dir / "pruned.pt")
    rows = [last_epoch_row(method, "pruned", "pruning", seed, setting, result.metadata, history[-1], net.epochs, 0,
                           out_dir / "pruned.pt", out_dir)]
    training.finish(out_dir, final_metrics(history, remaining_weights=result.metadata["remaining_weights"],
                                    layer_remaining=result.metadata["layer_remaining"]),
                    {"result_rows": rows, "pruning_steps": hooks.events})
    log.info("%s: GMP keeps %.2f%%; test %.2f%%", run.label(), 100 * result.metadata["remaining_weights"],
             100 * history[-1].test_accuracy)
    return result


def run_gmp_cs_layers(params: Params, cs_ticket_path: Path, out_dir: Path, device: torch.device,
                      checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> None:
    """Ablation: GMP handed a CS ticket's layer-wise sparsities (out/layerwise, method gmp_cs_layers) next to
    GMP with one global threshold to the same overall sparsity (out/global, method gmp); same seed."""
    ticket = load_ticket(cs_ticket_path)
    meta = ticket.metadata
    report = sparsity_of(ticket.masks)
    layer_targets = {name: 1.0 - kept / total for name, (kept, total) in report.per_layer.items()}
    setting = f"cs {meta['setting']}"
    common = dict(network=meta["network"], sparsity=report.sparsity, seed=int(meta["seed"]), device=device,
                  checkpoint_dir=checkpoint_dir, setting=setting)
    run_gmp(params, out_dir=Path(out_dir) / "layerwise", timing_dir=sub_dir(timing_dir, "layerwise"),
            layer_targets=layer_targets, method="gmp_cs_layers", **common)
    run_gmp(params, out_dir=Path(out_dir) / "global", timing_dir=sub_dir(timing_dir, "global"), method="gmp", **common)


def run_gmp_budget(params: Params, network: str, budget: str, sparsity: float, seed: int, out_dir: Path,
                   device: torch.device, checkpoint_dir: Path | None = CHECKPOINT_DIR,
                   timing_dir: Path | None = None) -> Ticket:
    """GMP to `sparsity` with a per-layer budget (`cs_repro.methods.budgets`: uniform or ERK) instead of one global
    ranking: each tensor follows its own cubic schedule to its budget's count. Method gmp_<budget>."""
    net = params.network(network)
    model, names = make_model(net, seed, torch.device("cpu"))
    shapes = {name: tuple(dict(model.named_parameters())[name].shape) for name in names}
    counts = layer_kept_counts(budget, shapes, sparsity)
    layer_targets = {name: 1.0 - counts[name] / math.prod(shapes[name]) for name in names}
    return run_gmp(params, network, sparsity, seed, out_dir, device, checkpoint_dir, timing_dir,
                   layer_targets=layer_targets, method=f"gmp_{budget}")
