"""One run, set up from params the same way for every method: prepared data, splits, the model, the one
training loop (`cs_repro.train`), and the artifacts each run writes. Each method's `run_*` functions
(in `cs_repro.methods.<method>`) build their hooks and tickets on top of `TrainingRun`.

Artifacts of a run directory (formats in the README):
  ticket.pt / tickets/level_XX.pt   tickets (see cs_repro.tickets)
  metrics.json                      deterministic: per-epoch rows and final numbers (same seed -> same file)
  timing.json                       wall-clock only (kept apart so metrics stay bit-identical across runs)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cs_repro import distributed
from cs_repro.checkpoints import CHECKPOINT_DIR, release
from cs_repro.data import DATASETS, TensorBatches, class_balanced_split, subset
from cs_repro.data.prepared import load_prepared
from cs_repro.device import hardware_name
from cs_repro.errors import UserError
from cs_repro.io import atomic_write_json
from cs_repro.models import apply_init, build_model, prunable_names
from cs_repro.param_fields import check_seed
from cs_repro.results import run_row
from cs_repro.tickets import Ticket
from cs_repro.train import DataSplits, Hooks, OptimConfig, TrainingDiverged, TrainingLoop

if TYPE_CHECKING:
    from cs_repro.params import NetworkParams, Params

log = logging.getLogger("cs_repro")

EVAL_BATCH = 500  # larger batches are slower for convs on a 2-core CPU (measured: 23 vs 34 us/image for lenet5)


# --- data -------------------------------------------------------------------------------------


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


def make_splits(net: NetworkParams, prepared: dict, seed: int, device: torch.device,
                shard: tuple[int, int] = (0, 1), workers: int = 0) -> DataSplits:
    """Train/val split (class-balanced, from the seed; no validation set when val_size is 0), optional
    training subset, test set; `shard` = (rank, processes) of a run on several processes. A streamed
    dataset's (ImageNet's) index gives file lists read by `workers` DataLoader processes."""
    spec = DATASETS.get(net.dataset)
    labels = prepared["train_labels"]
    if net.val_size:
        train_idx, val_idx = class_balanced_split(labels, net.val_size, seed)
    else:
        train_idx, val_idx = torch.arange(len(labels)), torch.arange(0)
    if net.train_subset:
        if net.train_subset > len(train_idx):
            raise UserError(f"train_subset={net.train_subset} exceeds the {len(train_idx)} training images left after validation")
        train_idx = train_idx[subset(labels[train_idx], net.train_subset, seed)]
    if net.batch_size > len(train_idx):  # the params check counts the dataset as distributed; this, the files read
        raise UserError(f"batch_size={net.batch_size} is larger than the training set ({len(train_idx)} images): "
                        f"choose at most {len(train_idx)}")
    test_labels = prepared["test_labels"]
    test_idx = torch.arange(len(test_labels))
    if net.test_subset:
        if net.test_subset > len(test_labels):
            raise UserError(f"test_subset={net.test_subset} exceeds the {len(test_labels)} test images")
        # Fixed (seed 0) for every run, so all methods and seeds are scored on the same images.
        test_idx = subset(test_labels, net.test_subset, 0)
    max_batches = net.max_batches or None
    mean, std = spec.normalization(net.normalization)

    if spec.streamed:
        from cs_repro.data.streaming import StreamedBatches

        root = Path(prepared["root"])
        crop = net.image_size or spec.image_shape[1]

        def batches(files, idx, y, batch_size, train):
            return StreamedBatches(root, [files[i] for i in idx.tolist()], y, batch_size, mean, std, train=train,
                                   augment=train and net.augment, crop=crop, workers=workers, device=device,
                                   max_batches=max_batches, shard=shard)

        train_files, test_files = prepared["train_files"], prepared["test_files"]
        # Evaluation batches of a process's training share: each batch in flight sits in shared memory
        # (workers x prefetch of them), and 500 ImageNet crops are 75 MB.
        per_process = net.batch_size // shard[1]
        return DataSplits(
            train=batches(train_files, train_idx, labels[train_idx], net.batch_size, True),
            val=batches(train_files, val_idx, labels[val_idx], per_process, False),
            test=batches(test_files, test_idx, test_labels[test_idx], per_process, False),
        )

    images = prepared["train_images"]
    test_images = prepared["test_images"][test_idx] if net.test_subset else prepared["test_images"]
    test_labels = test_labels[test_idx]

    def tensor_batches(x, y, batch_size, train):
        return _Source(TensorBatches(
            x, y, batch_size, mean, std, augment=train and net.augment,
            generator=torch.Generator(device=device) if train else None,
            max_batches=max_batches, device=device, shard=shard,
        ))

    return DataSplits(
        train=tensor_batches(images[train_idx], labels[train_idx], net.batch_size, True),
        val=tensor_batches(images[val_idx], labels[val_idx], EVAL_BATCH, False),
        test=tensor_batches(test_images, test_labels, EVAL_BATCH, False),
    )


# --- model ------------------------------------------------------------------------------------


def make_model(net: NetworkParams, seed: int, device: torch.device) -> tuple[nn.Module, list[str]]:
    """The network with its initial weights drawn from `seed`, and its prunable tensor names."""
    spec = DATASETS.get(net.dataset)
    channels, size, _ = spec.image_shape
    size = net.image_size or size
    torch.manual_seed(seed)
    model = build_model(net.model, spec.num_classes, channels, size)
    if (net.init, net.bn_init) != ("default", "default"):
        apply_init(model, net.init, net.bn_init)  # continues the seeded generator: same seed, same weights
    names = prunable_names(net.model, model, net.prunable or None)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, names


def model_outline(net: NetworkParams) -> tuple[nn.Module, list[str]]:
    """The network on the meta device and its prunable tensor names: its structure and sizes for the params
    check, with no memory used, no weights drawn and torch's global generator left as it was."""
    meta = torch.device("meta")
    with torch.random.fork_rng(devices=[]), meta:
        return make_model(net, 0, meta)


def prunable_sizes(net: NetworkParams) -> dict[str, int]:
    """{prunable tensor name: number of weights} of a network, for the params check (CS's penalty bound, IMP's
    levels); the outline is built once per network shape, however many checks ask."""
    return dict(_outline_sizes(net.model, net.dataset, tuple(net.prunable), net.image_size))


@functools.lru_cache(maxsize=None)
def _outline_sizes(model: str, dataset: str, prunable: tuple[str, ...], image_size: int) -> tuple[tuple[str, int], ...]:
    from cs_repro.params import NetworkParams

    outline, names = model_outline(NetworkParams(model=model, dataset=dataset, prunable=list(prunable),
                                                 image_size=image_size))
    sizes = dict(outline.named_parameters())
    return tuple((name, sizes[name].numel()) for name in names)


def optim_config(net: NetworkParams) -> OptimConfig:
    return OptimConfig(
        lr=net.lr, momentum=net.momentum, nesterov=net.nesterov, weight_decay=net.weight_decay,
        lr_milestones=tuple(net.lr_milestones), lr_gamma=net.lr_gamma, warmup_epochs=net.warmup_epochs,
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


def final_metrics(history, **extra) -> dict[str, Any]:
    last = history[-1]
    return {"test_accuracy": last.test_accuracy, "val_accuracy": last.val_accuracy, "train_loss": last.train_loss, **extra}


def _write_run(out_dir: Path, run: RunSpec, history, final: dict, seconds: float, loop: TrainingLoop, device,
               extra=None, timing_dir: Path | None = None) -> None:
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
        # checkpoint writes: this process's only (a resumed run's earlier ones went with the process)
        "seconds": seconds, "epoch_seconds": list(loop.epoch_seconds), "checkpoint_seconds": list(loop.checkpoint_seconds),
        "device": str(device),
        "hardware": hardware_name(device), "threads": torch.get_num_threads(),
    }, (timing_dir or out_dir) / "timing.json")


def network_config(params: Params, network: str) -> dict[str, Any]:
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
        world = distributed.current()
        if world.size != self.net.processes:
            raise UserError(f"networks.{network}.processes is {self.net.processes}, but this run has {world.size} "
                            f"process(es): start it through its stage (which starts the processes)")
        self.data = make_splits(self.net, load_prepared(self.net.dataset), seed, device, (world.rank, world.size),
                                params.data.workers)
        self.model, self.prunable = make_model(self.net, seed if model_seed is None else model_seed, device)
        self.spec: RunSpec | None = None
        self.loop: TrainingLoop | None = None
        self.history: list = []

    def train(self, spec: RunSpec, hooks: Hooks) -> list:
        self.spec = spec
        self.loop = _loop(self.params, spec, hooks, self.model, self.data, self.device, self.checkpoint_dir)
        self.history = self.loop.run()
        return self.history

    def finish_diverged(self, out_dir: Path, error: TrainingDiverged, extra: dict[str, Any] | None = None) -> None:
        """Record a run that diverged as its result (a control's retraining: a finding, not a failure): metrics.json
        with the epochs it trained, where and why it diverged, and no accuracy."""
        history = self.loop.history if self.loop is not None else []
        diverged = {"epoch": error.epoch, "where": error.where, "reason": error.reason}
        _write_run(Path(out_dir), self.spec, history, {"diverged": diverged},
                   time.perf_counter() - self.started, self.loop, self.device, {"diverged": diverged, **(extra or {})},
                   self.timing_dir)
        drop_checkpoint(self.spec, self.checkpoint_dir)

    def evaluate(self) -> dict[str, float]:
        """Test and validation accuracy of the model as it is now (e.g. after pruning it)."""
        return {"test_accuracy": self.loop.evaluate(self.data.test), "val_accuracy": self.loop.evaluate(self.data.val)}

    def finish(self, out_dir: Path, final: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        _write_run(Path(out_dir), self.spec, self.history, final, time.perf_counter() - self.started,
                   self.loop, self.device, extra, self.timing_dir)
        drop_checkpoint(self.spec, self.checkpoint_dir)


def ticket_network(params: Params, ticket: Ticket, ticket_path: Path) -> tuple[str, int]:
    """(network, seed) a ticket was found on, after checking params still describe the same model."""
    meta = ticket.metadata
    network = meta["network"]
    net = params.network(network)
    if net.model != meta.get("model"):
        raise UserError(f"ticket {ticket_path} was found on model {meta.get('model')!r}, but networks.{network}.model "
                        f"is {net.model!r}")
    return network, int(meta["seed"])


def ticket_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def drop_checkpoint(run: RunSpec, checkpoint_dir: Path | None) -> None:
    if checkpoint_dir:
        release(checkpoint_for(run, checkpoint_dir))


def last_epoch_row(method: str, variant: str, track: str, seed: int, setting: str, meta: dict, last, search_epochs: float,
                   retrain_epochs: int, ticket_file: Path, run_dir: Path) -> dict[str, Any]:
    """`results.run_row` for a run whose accuracies are those of its loop's last evaluation (`last`)."""
    return run_row(method=method, variant=variant, track=track, seed=seed, setting=setting, ticket_metadata=meta,
                   test_accuracy=last.test_accuracy, val_accuracy=last.val_accuracy, search_epochs=search_epochs,
                   retrain_epochs=retrain_epochs, ticket_file=ticket_file, run_dir=run_dir)


def ticket_metadata(method: str, network: str, net, seed: int, setting: str, config: dict, search_epochs: float,
                 **extra) -> dict[str, Any]:
    return {"method": method, "network": network, "model": net.model, "dataset": net.dataset, "seed": seed,
            "setting": setting, "params": config, "rewind_epoch": net.rewind_epoch, "search_epochs": search_epochs,
            "mask_scale": 1.0, **extra}


def sub_dir(timing_dir: Path | None, name: str) -> Path | None:
    """`timing_dir/name`, or None when the run keeps its timing beside its outputs."""
    return Path(timing_dir) / name if timing_dir else None
