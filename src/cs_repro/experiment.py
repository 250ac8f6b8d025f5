"""Assembling runs from params: prepared data, splits, model, the training loop, and the artifacts
each run writes. The CLI's stage commands are thin wrappers around the `run_*` functions here.

Artifacts of a run directory (formats in the README):
  ticket.pt / tickets/level_XX.pt   tickets (see cs_repro.tickets)
  metrics.json                      deterministic: per-epoch rows and final numbers (same seed -> same file)
  timing.json                       wall-clock only (kept apart so metrics stay bit-identical across runs)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cs_repro.data import DATASETS, TensorBatches, class_balanced_split, load_dataset, subset
from cs_repro.checkpoints import CHECKPOINT_DIR, release
from cs_repro.device import hardware_name
from cs_repro.errors import UserError
from cs_repro.io import atomic_torch_save, atomic_write_json, safe_torch_load
from cs_repro.masks import HardMasks, SoftMasks, sparsity_of
from cs_repro.methods.cs import CSConfig, CSSearch
from cs_repro.methods.imp import IMPConfig, IMPSearch
from cs_repro.methods.retrain import TicketRetrain
from cs_repro.models import MODELS, build_model, prunable_names
from cs_repro.params import NetworkParams, Params, check_seed
from cs_repro.results import run_row
from cs_repro.methods.random_masks import random_generator, random_masks_like
from cs_repro.tickets import Ticket, check_ticket_fits, load_ticket, save_ticket
from cs_repro.train import DataSplits, Hooks, OptimConfig, TrainingLoop

log = logging.getLogger("cs_repro")

PREPARED_DIR = Path("data/prepared")
EVAL_BATCH = 500  # larger batches are slower for convs on a 2-core CPU (measured: 23 vs 34 us/image for lenet5)
REINIT_SEED_OFFSET = 100_003  # the reinit control draws weights unrelated to the ticket's own init
# The one list of ways to retrain a ticket: from the rewind point with its own mask scale; from fresh weights
# (reinit control); a random mask with the ticket's layer-wise counts from the rewind point (random control,
# when random_control.enabled); from the rewind point with the released code's scale binary / sigmoid(s0)
# (CS tickets only).
RETRAIN_VARIANTS = ("rewind", "reinit", "random", "rewind_released_scale")


# --- data -------------------------------------------------------------------------------------


def prepared_path(dataset: str, root: Path = PREPARED_DIR) -> Path:
    return Path(root) / f"{dataset}.pt"


def prepare_dataset(params: Params, dataset: str, out: Path) -> dict[str, Any]:
    """Read the raw files (checksums verified) into one uint8 tensor file."""
    raw = load_dataset(dataset, params.data.root or None, params.data.verify_checksums, params.data.download)
    atomic_torch_save(
        {
            "dataset": dataset,
            "train_images": raw.train_images.contiguous(),
            "train_labels": raw.train_labels.contiguous(),
            "test_images": raw.test_images.contiguous(),
            "test_labels": raw.test_labels.contiguous(),
        },
        out,
    )
    return {"dataset": dataset, "train": len(raw.train_labels), "test": len(raw.test_labels)}


def load_prepared(dataset: str, root: Path = PREPARED_DIR) -> dict[str, torch.Tensor]:
    path = prepared_path(dataset, root)
    if not path.exists():
        raise UserError(f"{path} is missing: run `dvc repro prepare@{dataset}` (or `cs-repro prepare {dataset}`) first")
    return safe_torch_load(path, "prepared dataset")


class _Source:
    """Adapts `TensorBatches` to the loop's `batches(generator)` protocol."""

    def __init__(self, batches: TensorBatches) -> None:
        self._batches = batches

    def batches(self, generator):
        self._batches.generator = generator
        if self._batches.device.type != "cuda":
            return iter(self._batches)
        # The model is channels_last on CUDA; hand it inputs in the same layout (no CPU effect).
        return ((x.contiguous(memory_format=torch.channels_last), y) for x, y in self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def make_splits(net: NetworkParams, prepared: dict, seed: int, device: torch.device) -> DataSplits:
    """Train/val split (class-balanced, from the seed), optional training subset, test set."""
    spec = DATASETS.get(net.dataset)
    labels = prepared["train_labels"]
    train_idx, val_idx = class_balanced_split(labels, net.val_size, seed)
    if net.train_subset:
        if net.train_subset > len(train_idx):
            raise UserError(f"train_subset={net.train_subset} exceeds the {len(train_idx)} training images left after validation")
        train_idx = train_idx[subset(labels[train_idx], net.train_subset, seed)]
    images = prepared["train_images"]
    test_images, test_labels = prepared["test_images"], prepared["test_labels"]
    if net.test_subset:
        if net.test_subset > len(test_labels):
            raise UserError(f"test_subset={net.test_subset} exceeds the {len(test_labels)} test images")
        # Fixed (seed 0) for every run, so all methods and seeds are scored on the same images.
        chosen = subset(test_labels, net.test_subset, 0)
        test_images, test_labels = test_images[chosen], test_labels[chosen]
    max_batches = net.max_batches or None

    def batches(x, y, batch_size, train):
        return _Source(TensorBatches(
            x, y, batch_size, spec.mean, spec.std, augment=train and net.augment,
            generator=torch.Generator(device=device) if train else None,
            max_batches=max_batches, device=device,
        ))

    return DataSplits(
        train=batches(images[train_idx], labels[train_idx], net.batch_size, True),
        val=batches(images[val_idx], labels[val_idx], EVAL_BATCH, False),
        test=batches(test_images, test_labels, EVAL_BATCH, False),
    )


# --- model ------------------------------------------------------------------------------------


def make_model(net: NetworkParams, seed: int, device: torch.device) -> tuple[nn.Module, list[str]]:
    """The network with its initial weights drawn from `seed`, and its prunable tensor names."""
    spec = DATASETS.get(net.dataset)
    channels, size, _ = spec.image_shape
    torch.manual_seed(seed)
    model = build_model(net.model, spec.num_classes, channels, size)
    names = prunable_names(net.model, model, net.prunable or None)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, names


def optim_config(net: NetworkParams) -> OptimConfig:
    return OptimConfig(
        lr=net.lr, momentum=net.momentum, nesterov=net.nesterov, weight_decay=net.weight_decay,
        lr_milestones=tuple(net.lr_milestones), lr_gamma=net.lr_gamma,
    )


# --- runs -------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """Who a run is: what goes into its checkpoint key, metadata and log lines."""

    method: str
    network: str
    seed: int
    setting: str
    config: dict[str, Any]

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.method} {self.network} {self.setting} seed={self.seed}".replace("  ", " ")


def checkpoint_for(run: RunSpec, checkpoint_dir: Path = CHECKPOINT_DIR) -> Path:
    return Path(checkpoint_dir) / f"{run.method}-{run.network}-{run.key()}.pt"


def _loop(params: Params, run: RunSpec, hooks: Hooks, model: nn.Module, data: DataSplits,
          device: torch.device, checkpoint_dir: Path | None) -> TrainingLoop:
    net = params.network(run.network)
    return TrainingLoop(
        model, data, hooks, epochs=net.epochs, optim=optim_config(net), seed=run.seed, device=device,
        checkpoint_path=checkpoint_for(run, checkpoint_dir) if checkpoint_dir else None,
        bf16=net.bf16, run_label=run.label(), num_classes=DATASETS.get(net.dataset).num_classes,
        require_learning=not net.max_batches,  # a run truncated to a few batches is a smoke test
    )


def _final(history, **extra) -> dict[str, Any]:
    last = history[-1]
    return {"test_accuracy": last.test_accuracy, "val_accuracy": last.val_accuracy, "train_loss": last.train_loss, **extra}


def _write_run(out_dir: Path, run: RunSpec, history, final: dict, seconds: float, epoch_seconds, device, extra=None,
               timing_dir: Path | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json({
        "format": "cs-repro-run/1",
        "method": run.method, "network": run.network, "seed": run.seed, "setting": run.setting,
        "config": run.config,
        "epochs": [r.as_dict() for r in history],
        "final": final,
        **(extra or {}),
    }, out_dir / "metrics.json")
    atomic_write_json({
        "seconds": seconds, "epoch_seconds": list(epoch_seconds), "device": str(device),
        "hardware": hardware_name(device), "threads": torch.get_num_threads(),
    }, (timing_dir or out_dir) / "timing.json")


def _network_config(params: Params, network: str) -> dict[str, Any]:
    return asdict(params.network(network))


class TrainingRun:
    """One run of the training loop, set up the same way for every method and baseline.

    Construction draws the seed's data split and initial model; `train` runs the loop with the method's
    hooks (resuming from its checkpoint); `finish` writes metrics.json and timing.json and drops the
    checkpoint. What happens between (attaching masks, building tickets) is the method's own:

    >>> run = TrainingRun(params, "lenet300_100", seed=0, device=cpu)
    >>> masks = SoftMasks.attach(run.model, run.prunable, s0)
    >>> history = run.train(spec, CSSearch(masks, config))
    >>> run.finish(out_dir, final={...})
    """

    def __init__(self, params: Params, network: str, seed: int, device: torch.device,
                 checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None,
                 model_seed: int | None = None) -> None:
        self.params = params
        check_seed(seed)
        self.net = params.network(network)
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.timing_dir = timing_dir
        self.started = time.perf_counter()
        self.data = make_splits(self.net, load_prepared(self.net.dataset), seed, device)
        self.model, self.prunable = make_model(self.net, seed if model_seed is None else model_seed, device)
        self.spec: RunSpec | None = None
        self.loop: TrainingLoop | None = None
        self.history: list = []

    def train(self, spec: RunSpec, hooks: Hooks) -> list:
        self.spec = spec
        self.loop = _loop(self.params, spec, hooks, self.model, self.data, self.device, self.checkpoint_dir)
        self.history = self.loop.run()
        return self.history

    def evaluate(self) -> dict[str, float]:
        """Test and validation accuracy of the model as it is now (e.g. after pruning it)."""
        return {"test_accuracy": self.loop.evaluate(self.data.test), "val_accuracy": self.loop.evaluate(self.data.val)}

    def finish(self, out_dir: Path, final: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        _write_run(Path(out_dir), self.spec, self.history, final, time.perf_counter() - self.started,
                   self.loop.epoch_seconds, self.device, extra, self.timing_dir)
        _drop_checkpoint(self.spec, self.checkpoint_dir)


def ticket_network(params: Params, ticket: Ticket, ticket_path: Path) -> tuple[str, int]:
    """(network, seed) a ticket was found on, after checking params still describe the same model."""
    meta = ticket.metadata
    network = meta["network"]
    net = params.network(network)
    if net.model != meta.get("model"):
        raise UserError(f"ticket {ticket_path} was found on model {meta.get('model')!r}, but networks.{network}.model "
                        f"is {net.model!r}")
    return network, int(meta["seed"])


def run_cs_search(params: Params, network: str, s0: float, seed: int, out_dir: Path, device: torch.device,
                  checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """One CS search: writes ticket.pt, metrics.json (search curve + pruning-track accuracy), timing.json."""
    net = params.network(network)
    config = CSConfig(
        s0=s0, penalty_weight=params.lambda_, beta_final=params.cs.beta_final, rounds=params.cs.rounds,
        mask_lr=params.cs.mask_lr, clamp_rule=params.cs.clamp_rule, rewind_epoch=net.rewind_epoch,
    )
    run = RunSpec("cs", network, seed, f"s0={s0:g}", {"cs": asdict(config), "mask_scale": params.cs.mask_scale,
                                                       "network": _network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    masks = SoftMasks.attach(training.model, training.prunable, s0)
    hooks = CSSearch(masks, config)
    history = training.train(run, hooks)
    binary = masks.binary_masks()
    mask_scale = mask_scale_for(params.cs.mask_scale, s0)
    ticket = Ticket(binary, hooks.rewind_state, {
        "method": "cs", "network": network, "model": net.model, "dataset": net.dataset, "seed": seed,
        "setting": run.setting, "s0": s0, "params": run.config, "rewind_epoch": net.rewind_epoch,
        "search_epochs": config.rounds * net.epochs, "mask_scale": mask_scale,
    }).with_counts()
    # Pruning track: the searched network at its own trained weights with the binary mask, no retraining.
    masks.detach()
    # The searched network computes with W * sigmoid(beta_T*s)/sigmoid(s0), i.e. W * mask / sigmoid(s0) once beta_T is large.
    HardMasks.apply(training.model, binary, scale=mask_scale_for("released", s0)).remove()
    pruned = training.evaluate()
    save_ticket(ticket, out_dir / "ticket.pt")
    rows = [run_row(method="cs", variant="pruned", track="pruning", seed=seed, setting=run.setting,
                    ticket_metadata=ticket.metadata, test_accuracy=pruned["test_accuracy"],
                    val_accuracy=pruned["val_accuracy"], search_epochs=config.rounds * net.epochs, retrain_epochs=0,
                    ticket_file=out_dir / "ticket.pt", run_dir=out_dir)]
    training.finish(out_dir, _final(
        history, remaining_weights=ticket.metadata["remaining_weights"], layer_remaining=ticket.metadata["layer_remaining"],
        search_epochs=config.rounds * net.epochs,
    ), {"pruned": pruned, "result_rows": rows})
    log.info("%s: ticket keeps %.2f%% of prunable weights; pruned network test %.2f%%",
             run.label(), 100 * ticket.metadata["remaining_weights"], 100 * pruned["test_accuracy"])
    return ticket


def mask_scale_for(rule: str, s0: float) -> float:
    """'binary' (paper): 1. 'released': the released code multiplies the binary mask by 1/sigmoid(s0)."""
    return 1.0 if rule == "binary" else 1.0 + math.exp(-s0)


def run_imp(params: Params, network: str, seed: int, out_dir: Path, device: torch.device,
            continue_search: bool = False, checkpoint_dir: Path | None = CHECKPOINT_DIR,
            timing_dir: Path | None = None) -> list[Ticket]:
    """IMP (or IMP-C): writes tickets/level_XX.pt, metrics.json (every level's training), timing.json."""
    net = params.network(network)
    levels = params.imp.continue_levels if continue_search else params.imp.levels
    method = "imp_c" if continue_search else "imp"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    config = IMPConfig(tuple(training.prunable), params.imp.prune_fraction, levels, net.rewind_epoch, not continue_search)
    run = RunSpec(method, network, seed, "", {"imp": asdict(config), "network": _network_config(params, network)})
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
    training.finish(out_dir, _final(history, remaining_weights=tickets[-1].metadata["remaining_weights"]),
                    {"levels": [{k: v for k, v in row.items() if k != "search_seconds"} for row in level_rows],
                     "result_rows": result_rows})
    atomic_write_json({"levels": [{"level": r["level"], "search_seconds": r["search_seconds"]} for r in level_rows]},
                      (timing_dir or out_dir) / "level_timing.json")
    return tickets


def retrain_ticket(params: Params, ticket_path: Path, variants, out_dir: Path, device: torch.device,
                   checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> list[str]:
    """Retrain one ticket in each of `variants` (RETRAIN_VARIANTS), into out/<variant>/. The random control
    is left out while random_control.enabled is false. Returns the variants that ran."""
    unknown = [v for v in variants if v not in RETRAIN_VARIANTS]
    if unknown:
        raise UserError(f"variant {unknown[0]!r} is not allowed; choose from {', '.join(RETRAIN_VARIANTS)}")
    ran = []
    for variant in variants:
        if variant == "random" and not params.random_control.enabled:
            log.info("random-mask control of %s skipped: random_control.enabled is false", ticket_path)
            continue
        timing = Path(timing_dir) / variant if timing_dir else None
        if variant == "random":
            run_random_control(params, ticket_path, Path(out_dir) / variant, device, checkpoint_dir, timing)
        else:
            run_retrain(params, ticket_path, variant, Path(out_dir) / variant, device, checkpoint_dir, timing)
        ran.append(variant)
    return ran


def run_random_control(params: Params, ticket_path: Path, out_dir: Path, device: torch.device,
                       checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> dict[str, Any]:
    """Random masks with exactly the ticket's layer-wise counts, retrained from the ticket's rewind point."""
    ticket = load_ticket(ticket_path)
    meta = ticket.metadata
    network, seed = ticket_network(params, ticket, ticket_path)
    masks = random_masks_like(ticket.masks, random_generator(seed))
    control = Ticket(masks, ticket.rewind_state, {**meta, "control": "random", "source_ticket": str(ticket_path)}).with_counts()
    control_path = Path(out_dir) / "ticket.pt"
    save_ticket(control, control_path)
    run = RunSpec("control_random", network, seed, f"{meta['method']} {meta['setting']}", {
        "ticket": _ticket_digest(ticket_path), "variant": "random", "network": _network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    check_ticket_fits(ticket, ticket_path, training.model, training.prunable)
    hooks = TicketRetrain({k: v.to(device) for k, v in masks.items()}, ticket.rewind_state,
                          float(meta.get("mask_scale", 1.0)), label=run.method)
    history = training.train(run, hooks)
    epochs = training.net.epochs
    row = run_row(method=meta["method"], variant="random", track="ticket", seed=seed, setting=meta["setting"],
                  ticket_metadata=control.metadata, test_accuracy=history[-1].test_accuracy,
                  val_accuracy=history[-1].val_accuracy, search_epochs=meta["search_epochs"], retrain_epochs=epochs,
                  ticket_file=control_path, run_dir=out_dir, searched_ticket=ticket_path)
    final = _final(history, remaining_weights=control.metadata["remaining_weights"],
                   layer_remaining=control.metadata["layer_remaining"], retrain_epochs=epochs)
    training.finish(out_dir, final, {"result_rows": [row], "ticket": {k: v for k, v in meta.items() if k != "params"},
                                     "ticket_file": str(ticket_path), "variant": "random"})
    return final


def run_retrain(params: Params, ticket_path: Path, variant: str, out_dir: Path, device: torch.device,
                checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> dict[str, Any]:
    """Retrain one ticket's own mask: variant 'rewind' (from the rewind point), 'reinit' (fresh random weights)
    or 'rewind_released_scale' (from the rewind point, mask x 1/sigmoid(s0) as in the released CS code)."""
    if variant not in RETRAIN_VARIANTS or variant == "random":
        raise UserError(f"variant {variant!r} is not allowed; choose one of {', '.join(RETRAIN_VARIANTS)}")
    ticket = load_ticket(ticket_path)
    meta = ticket.metadata
    network, seed = ticket_network(params, ticket, ticket_path)
    mask_scale = float(meta.get("mask_scale", 1.0))
    if variant == "rewind_released_scale":
        if "s0" not in meta:
            raise UserError(f"{ticket_path}: variant rewind_released_scale needs a CS ticket (one with an s0)")
        mask_scale = mask_scale_for("released", float(meta["s0"]))
    run = RunSpec(f"retrain_{variant}", network, seed, f"{meta['method']} {meta['setting']}", {
        "ticket": _ticket_digest(ticket_path), "variant": variant, "network": _network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir,
                           model_seed=seed + REINIT_SEED_OFFSET if variant == "reinit" else seed)
    check_ticket_fits(ticket, ticket_path, training.model, training.prunable)
    start_state = None if variant == "reinit" else ticket.rewind_state
    masks = {k: v.to(device) for k, v in ticket.masks.items()}
    hooks = TicketRetrain(masks, start_state, mask_scale, label=run.method)
    history = training.train(run, hooks)
    final = _final(history, remaining_weights=meta["remaining_weights"], layer_remaining=meta["layer_remaining"],
                   search_epochs=meta["search_epochs"], retrain_epochs=training.net.epochs)
    # The released code's mask scale is a way of retraining the ticket, reported as a method of its own
    # (e.g. cs_released_scale) so that it gets its own line, table row and matching verdict.
    released = variant == "rewind_released_scale"
    rows = [run_row(method=f"{meta['method']}_released_scale" if released else meta["method"],
                    variant="rewind" if released else variant, track="ticket", seed=seed, setting=meta["setting"],
                    ticket_metadata=meta, test_accuracy=final["test_accuracy"], val_accuracy=final["val_accuracy"],
                    search_epochs=meta["search_epochs"], retrain_epochs=training.net.epochs, ticket_file=ticket_path,
                    run_dir=out_dir)]
    training.finish(out_dir, final, {"ticket": {k: v for k, v in meta.items() if k != "params"},
                                     "ticket_file": str(ticket_path), "variant": variant, "mask_scale": mask_scale,
                                     "result_rows": rows})
    return final


def _ticket_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _drop_checkpoint(run: RunSpec, checkpoint_dir: Path | None) -> None:
    if checkpoint_dir:
        release(checkpoint_for(run, checkpoint_dir))


__all__ = [
    "MODELS", "prepare_dataset", "load_prepared", "make_splits", "make_model", "run_cs_search", "run_imp", "run_retrain",
    "run_random_control", "retrain_ticket", "RETRAIN_VARIANTS",
    "sparsity_of",
]
