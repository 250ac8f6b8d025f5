"""The one training loop. Every method (CS, IMP, retraining, baselines) runs through `TrainingLoop`.

A run is a list of *phases* (a CS round, an IMP level, a retraining), each `epochs` long with its own
multi-step learning-rate schedule (the schedule restarts every phase). Methods customise the loop by
subclassing `Hooks`; they never copy it.

After every epoch the loop writes a resume checkpoint (model, optimisers, method state, history)
atomically with the sha256 of its payload (`io.save_checkpoint`; one that fails the check is set aside, never
resumed from), so a killed run continues from its last checkpointed epoch and ends with the same numbers
as an uninterrupted one: data order and augmentation are drawn from a generator seeded by
(seed, phase, epoch), never from global state. Where one write costs more than CHECKPOINT_BUDGET of
the training since the last (large networks on a fast GPU), checkpoints are spaced out to keep that share.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cs_repro.errors import UserError
from cs_repro.fingerprint import code_fingerprint
from cs_repro import distributed
from cs_repro.io import is_writer, load_checkpoint, save_checkpoint

log = logging.getLogger("cs_repro")


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings shared by every phase (the paper's: lr 0.1, Nesterov, momentum 0.9, wd 1e-4)."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up over the first epochs of every phase, step by step (large batches)


def lr_at(base_lr: float, epoch: int, milestones: Iterable[int], gamma: float) -> float:
    """The multi-step schedule: base_lr * gamma^(number of milestones <= epoch), epoch counted within a phase."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


def make_sgd(params: list[Tensor], lr: float, config: OptimConfig, weight_decay: float | None = None) -> torch.optim.SGD:
    """SGD as the paper uses it; `initial_lr` is what the schedule scales.

    The update runs as torch's fused kernel (one pass per tensor instead of four) wherever every
    parameter is a dense floating-point tensor on a device that has one: on a 2-core CPU this made a
    LeNet-300-100 step ~10-20% cheaper and the CS mask logits' optimiser nearly free
    (benchmarks/mask_overhead.py). Same update rule, same state_dict, deterministic.
    """
    params = list(params)
    fused = bool(params) and all(
        isinstance(p, Tensor) and p.is_floating_point() and not p.is_sparse and p.device.type in ("cpu", "cuda")
        for p in params
    )
    optimizer = torch.optim.SGD(
        params,
        lr=lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay if weight_decay is None else weight_decay,
        fused=fused or None,
    )
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return optimizer


# --- data ---------------------------------------------------------------------------------------


class BatchSource(Protocol):
    """Yields (inputs, labels) batches; training sources shuffle and augment with the given generator."""

    def batches(self, generator: torch.Generator | None) -> Iterable[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...


@dataclass
class DataSplits:
    train: BatchSource
    val: BatchSource
    test: BatchSource


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    """A distinct, stable generator seed for every (seed, phase, epoch)."""
    return (seed * 1_000_003 + phase * 10_007 + epoch) % (2**63 - 1)


# --- hooks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int


class Hooks:
    """Where a method plugs into the loop. The defaults train a dense network for one phase."""

    label = "train"

    def phases(self, loop: "TrainingLoop") -> list[Phase]:
        return [Phase("train", loop.epochs)]

    def begin_phase(self, loop: "TrainingLoop", phase: int) -> None:
        """Side effects at the start of a phase (prune, rewind, reset temperature). Not re-run on resume."""

    def make_optimizers(self, loop: "TrainingLoop", phase: int) -> list[torch.optim.Optimizer]:
        """Build the phase's optimisers. On resume their state is loaded afterwards, so no side effects here."""
        return [make_sgd([p for p in loop.model.parameters() if p.requires_grad], loop.optim.lr, loop.optim)]

    def must_learn(self, phase: int) -> bool:
        """Whether ending `phase` at chance accuracy is a failed run (dense training) rather than a result
        (a mask search or a ticket's retraining, where a mask that removed too much may leave nothing to train)."""
        return True

    def begin_epoch(self, loop: "TrainingLoop", phase: int, epoch: int) -> None:
        """Called before every epoch (CS sets its temperature here)."""

    def loss(self, loop: "TrainingLoop", logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)

    def after_step(self, loop: "TrainingLoop", phase: int, step: int) -> None:
        """Called after every optimiser step; `step` counts the phase's steps, 1 after its first (a rewind
        point given in iterations is taken here)."""

    def end_epoch(self, loop: "TrainingLoop", phase: int, epoch: int) -> dict[str, Any]:
        """Extra numbers for this epoch's metrics row (sparsity, temperature, ...)."""
        return {}

    def end_phase(self, loop: "TrainingLoop", phase: int) -> None:
        """After the phase's last epoch (CS clamps its logits; IMP records the level's ticket)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def resume(self, loop: "TrainingLoop") -> None:
        """After a checkpoint restore: re-register what a state dict cannot hold (gradient hooks)."""


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class EpochRecord:
    phase: int
    phase_name: str
    epoch: int  # within the phase
    global_epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None  # None: no validation set (val_size 0)
    test_accuracy: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "extra"}
        row.update(self.extra)
        return row


class TrainingDiverged(UserError):
    """A run whose loss blew up or whose accuracy fell back to chance: the stage fails, writing nothing (a
    control's retraining records it as a result instead: methods/retrain.py)."""

    def __init__(self, message: str, where: str = "", epoch: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.where = where  # "retrain epoch 3/6"
        self.epoch = epoch  # 1-based, counted over every phase
        self.reason = reason


#: A phase's training loss above this many times its first epoch's, and above twice the loss of a uniform
#: guess (2 ln K), means the run diverged without NaN (e.g. LeNet-300-100 at lr 0.2: loss 4.7, 11.2, 89). A
#: network whose masks removed everything sits at ~ln K: a result, not a divergence.
DIVERGENCE_FACTOR = 4.0
#: A phase that must learn (Hooks.must_learn: dense training) and ends within this margin of chance did not
#: learn at all (e.g. LeNet-300-100 at lr 0.2 here: loss 4.5, then 2.31 = ln 10 for every epoch).
NOT_LEARNED_MARGIN = 0.05


#: Resume checkpoints may cost at most this share of training time. A write cheaper than
#: CHECKPOINT_ALWAYS_SECONDS happens after every epoch whatever the share (a LeNet's takes ~10 ms); a dearer one
#: waits until enough training has accumulated since the last, so a kill loses those epochs. A VGG-16 CS state
#: (~240 MB) took 0.25-0.7 s to write on the 2-core test machine: 5-13% of a 5.5 s H100 epoch.
CHECKPOINT_BUDGET = 0.02
CHECKPOINT_ALWAYS_SECONDS = 0.1


class TrainingLoop:
    """Runs the phases a method declares, with per-epoch evaluation and resumable checkpoints."""

    def __init__(
        self,
        model: nn.Module,
        data: DataSplits,
        hooks: Hooks,
        *,
        epochs: int,
        optim: OptimConfig,
        seed: int,
        device: torch.device,
        checkpoint_path: Path | None = None,
        bf16: bool = False,
        run_label: str = "",
        num_classes: int | None = None,
        require_learning: bool = True,
    ) -> None:
        self.model = model
        self.data = data
        self.hooks = hooks
        self.epochs = epochs
        self.optim = optim
        self.seed = seed
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.autocast = bf16 and device.type == "cuda"
        self.run_label = run_label or hooks.label
        self.num_classes = num_classes  # for the divergence checks (chance accuracy, uniform-guess loss)
        # Off for smoke runs (a few batches of random-content fixtures cannot learn): the loss checks stay on.
        self.require_learning = require_learning
        self.optimizers: list[torch.optim.Optimizer] = []
        self._optimizer_phase = -1
        self.history: list[EpochRecord] = []
        self.epoch_seconds: list[float] = []
        self.global_epoch = 0
        self.checkpoint_seconds: list[float] = []  # every checkpoint write of this process (timing.json has them)
        self._trained_since_save = 0.0  # training seconds since the last write
        self._spacing_logged = False
        self.world = distributed.current()
        self._replicated: tuple[int, nn.Module] | None = None  # (phase, DistributedDataParallel of the model)

    def _trainer(self, phase: int) -> nn.Module:
        """What a training step calls: the model, or on several processes the model under
        DistributedDataParallel (which averages gradients over processes). Built per phase, after its optimisers:
        a phase may add parameters (CS's logits, L0's gates) or freeze some. Construction copies rank 0's
        parameters and buffers to every process, so all ranks start each phase from the same state."""
        if not self.world.distributed:
            return self.model
        if self._replicated is None or self._replicated[0] != phase:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self._replicated = (phase, DistributedDataParallel(self.model, device_ids=ids))
        return self._replicated[1]

    # -- checkpointing
    def _checkpoint_due(self) -> bool:
        """Whether a checkpoint now keeps writes within CHECKPOINT_BUDGET of the training time (see there)."""
        cost = self.checkpoint_seconds[-1] if self.checkpoint_seconds else 0.0
        if cost <= max(CHECKPOINT_ALWAYS_SECONDS, CHECKPOINT_BUDGET * self._trained_since_save):
            return True
        if not self._spacing_logged:
            self._spacing_logged = True
            log.info("%s: a checkpoint takes %.2f s (%.0f%% of the last epoch): writing one every %.0f s of training",
                     self.run_label, cost, 100 * cost / self.epoch_seconds[-1], cost / CHECKPOINT_BUDGET)
        return False

    def _save(self, phase: int, next_epoch: int, begun: bool) -> None:
        if self.checkpoint_path is None:
            return
        started = time.perf_counter()
        save_checkpoint(
            {
                "code": code_fingerprint(),
                "position": {"phase": phase, "next_epoch": next_epoch, "begun": begun},
                "model": self.model.state_dict(),
                # Saved even between phases: CS carries its optimiser state across rounds.
                "optimizer_phase": self._optimizer_phase,
                "optimizers": [opt.state_dict() for opt in self.optimizers],
                "hooks": self.hooks.state_dict(),
                "history": [r.as_dict() | {"_extra_keys": sorted(r.extra)} for r in self.history],
                "epoch_seconds": list(self.epoch_seconds),
                "global_epoch": self.global_epoch,
            },
            self.checkpoint_path,
        )
        self.checkpoint_seconds.append(time.perf_counter() - started)
        self._trained_since_save = 0.0

    def _restore(self) -> tuple[int, int, bool]:
        state = load_checkpoint(self.checkpoint_path) if self.checkpoint_path else None
        if state is None:
            return 0, 0, False
        if state.get("code") != code_fingerprint():
            log.info("%s: checkpoint %s was written by other code (source digest %s, now %s); starting over",
                     self.run_label, self.checkpoint_path, state.get("code", "not recorded"), code_fingerprint())
            if is_writer():
                Path(self.checkpoint_path).unlink(missing_ok=True)
            return 0, 0, False
        self.model.load_state_dict(state["model"])
        self.hooks.load_state_dict(state["hooks"])
        self.hooks.resume(self)
        self.history = [_record_from_dict(row) for row in state["history"]]
        self.epoch_seconds = list(state["epoch_seconds"])
        self.global_epoch = int(state["global_epoch"])
        position = state["position"]
        phase, next_epoch, begun = int(position["phase"]), int(position["next_epoch"]), bool(position["begun"])
        if state["optimizers"]:
            self._optimizer_phase = int(state["optimizer_phase"])
            self.optimizers = self.hooks.make_optimizers(self, self._optimizer_phase)
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
        log.info("%s: resuming from %s (phase %d, epoch %d)", self.run_label, self.checkpoint_path, phase, next_epoch)
        return phase, next_epoch, begun

    # -- running
    def run(self) -> list[EpochRecord]:
        phases = self.hooks.phases(self)
        phase, next_epoch, begun = self._restore()
        while phase < len(phases):
            if not begun:
                self.hooks.begin_phase(self, phase)
                self.optimizers = self.hooks.make_optimizers(self, phase)
                self._optimizer_phase = phase
                begun = True
            for epoch in range(next_epoch, phases[phase].epochs):
                self._run_epoch(phases, phase, epoch)
                self._trained_since_save += self.epoch_seconds[-1]
                if self._checkpoint_due():
                    self._save(phase, epoch + 1, True)
            self.hooks.end_phase(self, phase)
            phase, next_epoch, begun = phase + 1, 0, False
            # the finished run's checkpoint is always written: a stage with several runs resumes each from it
            if phase == len(phases) or self._checkpoint_due():
                self._save(phase, 0, False)
        return self.history

    def _scale_lr(self, factor: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _run_epoch(self, phases: list[Phase], phase: int, epoch: int) -> None:
        started = time.perf_counter()
        self._scale_lr(lr_at(1.0, epoch, self.optim.lr_milestones, self.optim.lr_gamma))
        self.hooks.begin_epoch(self, phase, epoch)
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, phase, epoch))
        where = f"{phases[phase].name} epoch {epoch + 1}/{phases[phase].epochs}"
        train_loss, train_accuracy = self._train_one_epoch(generator, where, phase, epoch)
        self._check_loss(phase, where, train_loss)
        val_accuracy = self.evaluate(self.data.val)
        test_accuracy = self.evaluate(self.data.test)
        extra = self.hooks.end_epoch(self, phase, epoch)
        record = EpochRecord(
            phase=phase,
            phase_name=phases[phase].name,
            epoch=epoch,
            global_epoch=self.global_epoch,
            lr=self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_accuracy=val_accuracy,
            test_accuracy=test_accuracy,
            extra=extra,
        )
        self.history.append(record)
        if epoch + 1 == phases[phase].epochs:
            self._check_phase_end(phase, where)
        self.global_epoch += 1
        self.epoch_seconds.append(time.perf_counter() - started)
        extras = " ".join(f"{k} {_fmt(v)}" for k, v in extra.items())
        val = "none" if val_accuracy is None else f"{100 * val_accuracy:.2f}%"
        log.info(
            "%s | %s epoch %d/%d | loss %.4f | train %.2f%% val %s test %.2f%% | %s | %.1fs",
            self.run_label, phases[phase].name, epoch + 1, phases[phase].epochs, train_loss,
            100 * train_accuracy, val, 100 * test_accuracy, extras, self.epoch_seconds[-1],
        )

    # -- divergence: stop the run, with no output, rather than let a dead network become a result
    def _diverged(self, where: str, reason: str) -> "TrainingDiverged":
        if self.checkpoint_path is not None and is_writer():  # resuming would only diverge again
            Path(self.checkpoint_path).unlink(missing_ok=True)
        return TrainingDiverged(
            f"{self.run_label}: training diverged in {where}: {reason}; nothing was written. Lower the learning "
            f"rate (networks.<network>.lr, now {self.optim.lr:g}) or check the data",
            where=where, epoch=self.global_epoch + 1, reason=reason)

    def _check_loss(self, phase: int, where: str, loss: float) -> None:
        if not math.isfinite(loss):
            raise self._diverged(where, f"the training loss became {loss}")
        first = next((r.train_loss for r in self.history if r.phase == phase), loss)
        ceiling = max(DIVERGENCE_FACTOR * first, 2 * math.log(self.num_classes) if self.num_classes else 0.0)
        if loss > ceiling:
            raise self._diverged(where, f"the training loss {loss:.4g} is over {DIVERGENCE_FACTOR:g}x the phase's "
                                        f"first epoch ({first:.4g})")

    def _check_phase_end(self, phase: int, where: str) -> None:
        if not self.num_classes or not self.require_learning or not self.hooks.must_learn(phase):
            return
        chance = 1.0 / self.num_classes
        last = self.history[-1]
        # without a validation set (val_size 0) the training accuracy is what the phase is judged by
        final, which = (last.val_accuracy, "validation") if last.val_accuracy is not None else (
            last.train_accuracy, "training")
        if final <= chance + NOT_LEARNED_MARGIN:
            raise self._diverged(where, f"{which} accuracy ends the phase at {100 * final:.2f}% (chance "
                                        f"{100 * chance:.0f}%): the network did not learn")

    def _train_one_epoch(self, generator: torch.Generator, description: str, phase: int,
                         epoch: int) -> tuple[float, float]:
        self.model.train()
        trainer = self._trainer(phase)
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        step = epoch * len(self.data.train)  # the phase's steps before this epoch (each epoch has the same count)
        warmup_steps = self.optim.warmup_epochs * len(self.data.train)
        for inputs, labels in progress(self.data.train.batches(generator), len(self.data.train), description):
            if step < warmup_steps:  # lr grows linearly to its scheduled value (Goyal et al. 2017)
                self._scale_lr(lr_at(1.0, epoch, self.optim.lr_milestones, self.optim.lr_gamma) * (step + 1) / warmup_steps)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                logits = trainer(inputs)
                loss = self.hooks.loss(self, logits, labels)
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
            step += 1
            self.hooks.after_step(self, phase, step)
            # Accumulate on the device: a .item() per step would stall a GPU.
            total_loss += loss.detach() * labels.numel()
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.numel()
        if self.world.distributed:  # every process reports the whole epoch's numbers
            totals = distributed.all_sum(torch.stack([total_loss, correct.double(),
                                                      torch.tensor(float(seen), device=self.device, dtype=torch.float64)]))
            total_loss, correct, seen = totals[0], totals[1].long(), int(totals[2])
        if seen == 0:
            return 0.0, 0.0
        return float(total_loss) / seen, int(correct) / seen

    @torch.no_grad()
    def evaluate(self, source: BatchSource) -> float | None:
        """Accuracy on `source`; None for an empty one (no validation set)."""
        if self.world.distributed:
            # BatchNorm's running statistics moved with each process's own share of the last batches: score
            # with rank 0's (those its checkpoint holds), the same on every process.
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, 0)
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for inputs, labels in source.batches(None):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(inputs)
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
        if self.world.distributed:  # each process scored its share of the batches
            counts = distributed.all_sum(torch.stack([correct, torch.tensor(seen, device=self.device)]))
            correct, seen = counts[0], int(counts[1])
        return int(correct) / seen if seen else None


def _record_from_dict(row: dict[str, Any]) -> EpochRecord:
    row = dict(row)
    extra_keys = row.pop("_extra_keys")
    extra = {k: row.pop(k) for k in extra_keys}
    return EpochRecord(**row, extra=extra)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def progress(iterable: Iterable, total: int, description: str) -> Iterable:
    """A progress bar over batches when stderr is a terminal; the bare iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, leave=False, unit="batch")
