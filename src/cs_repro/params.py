"""Typed parameters for every section of params.yaml, each validating itself.

Every field carries a `help` text (shown by `cs-repro params`). Loading rejects unknown keys,
wrong types and out-of-range values with one line naming the key and what is allowed.

Numbers may arrive as strings: `dvc exp run -S lambda=1e-9` writes `1e-09`, which YAML 1.1 (PyYAML)
reads as a string, so float fields accept any string that Python's float() accepts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cs_repro.methods.budgets import LAYER_BUDGETS
from cs_repro.errors import UserError
from cs_repro.param_fields import check_float32, check_listed, check_s0, check_seed, param


@dataclass
class NetworkParams:
    """How one network is trained: used for CS rounds, IMP levels and ticket retraining alike."""

    model: str = param("lenet300_100", "model registry name (`cs-repro list` shows them)")
    dataset: str = param("fashion_mnist", "dataset registry name")
    train_subset: int = param(0, "train on a class-balanced subset of this many images (0 = all)", min=0)
    test_subset: int = param(0, "evaluate on a class-balanced subset of this many test images (0 = all; quick profile only)", min=0)
    val_size: int = param(5000, "class-balanced validation images held out of the training set (0: none, train on "
                                "all; the checks that read validation accuracy then read training accuracy)", min=0)
    batch_size: int = param(128, "mini-batch size (the global batch: split evenly over `processes`)", min=1)
    processes: int = param(1, "processes (one per GPU) each run of this network trains on, with torch.distributed: "
                              "each takes batch_size / processes of every batch (docs/architecture.md)", min=1)
    epochs: int = param(10, "E: epochs per CS round, per IMP level and per ticket retraining", min=1)
    lr: float = param(0.1, "initial learning rate (SGD)", min_exclusive=0.0)
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=1.0)
    nesterov: bool = param(True, "Nesterov momentum")
    weight_decay: float = param(1e-4, "weight decay on weights (never on mask logits)", min=0.0)
    lr_milestones: list[int] = param([], "epochs (within a round) at which the lr is multiplied by lr_gamma")
    lr_gamma: float = param(0.1, "lr multiplier at each milestone", min_exclusive=0.0)
    warmup_epochs: int = param(0, "linear lr warm-up, step by step, over the first epochs of every round / level / "
                                  "retraining (for large global batches; 0 = none)", min=0)
    rewind_epoch: int = param(1, "k: the rewind point, in epochs of the first round / dense run", min=0)
    rewind_iteration: int = param(0, "the rewind point in optimiser steps of the first round / dense run instead "
                                     "(Frankle et al.); 0 = use rewind_epoch", min=0)
    augment: bool = param(False, "training augmentation: pad-4 random crop + horizontal flip (in-memory datasets, "
                                 "CIFAR); RandomResizedCrop + flip (imagenet; off: its evaluation crop)")
    prunable: list[str] = param([], "glob patterns of prunable weight names; empty = the model's default")
    image_size: int = param(0, "side of the square images a streamed dataset's transforms produce (0: the "
                                "dataset's own, 224 for imagenet; smaller for tests)", min=0)
    max_batches: int = param(0, "truncate every epoch to this many batches (0 = whole epoch; for tests)", min=0)
    bf16: bool = param(False, "bf16 autocast on CUDA (changes numerics; off for the paper protocol)")
    init: str = param("default", "weights at initialisation: 'default' (Xavier normal, as the released CS code) or "
                      "'kaiming_normal' (conv and linear weights ~ N(0, 2/fan_in), biases 0, as open_lth)",
                      choices=("default", "kaiming_normal"))
    bn_init: str = param("default", "BatchNorm scales at initialisation: 'default' (1) or 'uniform' (~U(0, 1), as "
                         "open_lth)", choices=("default", "uniform"))
    normalization: str = param("dataset", "input normalisation: 'dataset' (its own per-channel mean and std) or "
                               "'imagenet' (ImageNet's statistics, as open_lth's CIFAR-10; 3-channel datasets)",
                               choices=("dataset", "imagenet"))

    def check_batches(self, where: str, dataset_name: str, dataset_images: int) -> None:
        """What a run would find out only after training for a while: its training set (from the dataset's
        size as distributed, before any data is read) against val_size, train_subset, batch_size and
        rewind_iteration. `dataset_images` 0 = not known: the run checks on the data it reads."""
        if not dataset_images:
            return
        if self.val_size >= dataset_images:
            raise UserError(f"{where}.val_size={self.val_size} leaves no training images: {dataset_name} has "
                            f"{dataset_images:,}")
        left = dataset_images - self.val_size
        if self.train_subset > left:
            raise UserError(f"{where}.train_subset={self.train_subset} exceeds the {left:,} training images "
                            f"{dataset_name} has after {where}.val_size={self.val_size} are held out")
        images = self.train_subset or left
        if self.batch_size > images:
            raise UserError(f"{where}.batch_size={self.batch_size} is larger than the training set ({images:,} "
                            f"images): choose at most {images}")
        # several processes drop an epoch's last, partial batch (it would not split evenly)
        steps = images // self.batch_size if self.processes > 1 else math.ceil(images / self.batch_size)
        if self.max_batches:
            steps = min(steps, self.max_batches)
        if self.rewind_iteration > self.epochs * steps:
            raise UserError(f"{where}.rewind_iteration={self.rewind_iteration} lies beyond the first round's "
                            f"{self.epochs * steps:,} optimiser steps ({self.epochs} epochs of {steps} batches of "
                            f"{self.batch_size} from {images:,} images): choose at most {self.epochs * steps}")

    def validate(self, where: str) -> None:
        if self.batch_size % self.processes:
            raise UserError(f"{where}.batch_size={self.batch_size} does not split evenly over {where}.processes="
                            f"{self.processes}: choose a multiple of {self.processes}")
        if self.warmup_epochs >= self.epochs:
            raise UserError(f"{where}.warmup_epochs={self.warmup_epochs} must be < {where}.epochs={self.epochs}")
        if self.rewind_epoch > self.epochs:
            raise UserError(f"{where}.rewind_epoch={self.rewind_epoch} must be <= {where}.epochs={self.epochs}")
        if any(m <= 0 or m >= self.epochs for m in self.lr_milestones):
            raise UserError(f"{where}.lr_milestones={self.lr_milestones} must lie strictly between 0 and epochs={self.epochs}")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise UserError(f"{where}.lr_milestones must be increasing, got {self.lr_milestones}")


@dataclass
class SweepParams:
    """The fan-out: every method's stages run on these networks x seeds x the method's own settings (a method
    may name fewer networks in its section). Only stage names and commands read these, never a stage body."""

    datasets: list[str] = param(["fashion_mnist"], "datasets to prepare (every network's dataset must be here)")
    networks: list[str] = param(["lenet300_100"], "keys of `networks` to run")
    seeds: list[int] = param([0], "seeds of every method; each one is its own set of stages")
    s0: list[float] = param([0.0], "CS mask initialisations; each one is its own CS stage")

    def validate(self, where: str) -> None:
        for key in ("datasets", "networks", "seeds", "s0"):
            if not getattr(self, key):
                raise UserError(f"{where}.{key} is empty: list at least one value")
        for seed in self.seeds:
            check_seed(seed, f"{where}.seeds")
        for s0 in self.s0:
            check_s0(s0, f"{where}.s0")


@dataclass
class CPUParams:
    """How a training stage computes on the CPU. Both settings change the last bits of CPU results, so they are
    parameters (and every training stage declares them) rather than properties of the machine."""

    threads: int = param(0, "CPU threads of each training stage (0: torch's default, every core); CPU sums differ "
                            "in their last bits across thread counts, so a fixed count gives the same bytes on any "
                            "machine, and 1 lets `cs-repro parallel` run one stage per core", min=0)
    flush_denormals: bool = param(False, "treat float32 values below 1.2e-38 as 0 on the CPU (torch.set_flush_denormal):"
                                         " CS's late rounds produce such values, which x86 CPUs compute with up to "
                                         "~100x slower; numerically negligible, but not bit-identical to leaving them")


    def oversubscribed(self) -> str | None:
        """A warning when `threads` exceeds the cores this process may use (valid params, but slow: a fixed
        count is what makes the bytes machine-independent, so this is not an error)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if self.threads <= cores:
            return None
        return (f"cpu.threads={self.threads} is more than the {cores} cores this machine gives this process: every "
                f"training stage runs several times slower (1000 threads on 2 cores: 70x); lower cpu.threads in "
                f"params.yaml (`make repro` writes it from conf/profile/<profile>.yaml)")


@dataclass
class DataParams:
    """Where raw datasets are found."""

    root: str = param("", "folder holding the raw files ('' = the default places: Debian's package location)")
    download: bool = param(False, "download with torchvision when the files are not found (needs internet)")
    verify_checksums: bool = param(True, "check the raw files against known digests")
    workers: int = param(8, "DataLoader worker processes per training process for datasets streamed from disk "
                            "(imagenet); results do not depend on it", min=0)


@dataclass
class BaselineSweepParams:
    """The pruning baselines' and CS ablations' settings (on sweep.seeds). Like `sweep`, read only by stage names
    and commands."""

    networks: list[str] = param(["lenet300_100"], "keys of `networks` the baselines and ablations run on; each in "
                                                  "sweep.networks")
    sparsities: list[float] = param([0.8, 0.9, 0.95], "target sparsities of GMP and one-shot magnitude pruning")
    layer_budgets: list[str] = param(["uniform", "erk"], "per-layer budgets GMP and one-shot magnitude pruning also "
                                     "run with, besides one global ranking: uniform, erk ([] = global only)")

    def __post_init__(self) -> None:
        for key in ("networks", "sparsities", "layer_budgets"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise UserError(f"baselines.{key} must not repeat a value")
        for value in self.sparsities:
            if not 0.0 < value < 1.0:
                raise UserError(f"baselines.sparsities: {value} must lie strictly between 0 and 1")
        for value in self.layer_budgets:
            if value not in LAYER_BUDGETS:
                raise UserError(f"baselines.layer_budgets: {value!r} is not a layer budget; choose from "
                                f"{', '.join(LAYER_BUDGETS)} (global always runs)")


@dataclass
class CoreParams:
    """The sections every run shares; `Params` adds each method's own (see `method_sections`)."""

    profile: str = param("quick", "profile name (conf/profile/<name>.yaml: quick, extended, paper, frankle, imagenet); informational",
                         choices=("quick", "paper", "extended", "frankle", "imagenet", "test"))
    lambda_: float = param(1e-8, "lambda: weight of the CS mask penalty (key `lambda` in params.yaml)", min=0.0)
    cpu: CPUParams = field(default_factory=CPUParams, metadata={"help": "how training stages use the CPU"})
    data: DataParams = field(default_factory=DataParams, metadata={"help": "raw data location"})
    networks: dict[str, NetworkParams] = field(default_factory=dict, metadata={"help": "training settings per network"})
    sweep: SweepParams = field(default_factory=SweepParams, metadata={"help": "fan-out"})
    baselines: BaselineSweepParams = field(default_factory=BaselineSweepParams,
                                           metadata={"help": "fan-out of the baselines and ablations"})

    def validate(self) -> None:
        self.sweep.validate("sweep")
        if not self.networks:
            raise UserError("networks is empty: define at least one network")
        for name in self.sweep.networks:
            if name not in self.networks:
                raise UserError(f"sweep.networks names {name!r}, which is not a key of networks ({', '.join(self.networks)})")
        from cs_repro.data import DATASETS
        from cs_repro.models import MODELS

        for name, net in self.networks.items():
            net.validate(f"networks.{name}")
            if net.model not in MODELS:
                raise UserError(f"networks.{name}.model: unknown model {net.model!r}; allowed: {', '.join(MODELS.names())}")
            if net.dataset not in DATASETS:
                raise UserError(
                    f"networks.{name}.dataset: unknown dataset {net.dataset!r}; allowed: {', '.join(DATASETS.names())}"
                )
            spec = DATASETS.get(net.dataset)
            if net.image_size and not spec.streamed:
                raise UserError(f"networks.{name}.image_size applies to datasets streamed from disk (imagenet); "
                                f"{net.dataset} images are {spec.image_shape[1]} pixels: set it to 0")
            net.check_batches(f"networks.{name}", net.dataset, spec.train_size)
        for name in self.sweep.networks:
            dataset = self.networks[name].dataset
            if dataset not in self.sweep.datasets:
                raise UserError(f"networks.{name}.dataset={dataset!r} is not in sweep.datasets {self.sweep.datasets}: add it")
        if len(set(self.sweep.seeds)) != len(self.sweep.seeds) or len(set(self.sweep.s0)) != len(self.sweep.s0):
            raise UserError("sweep.seeds and sweep.s0 must not repeat a value")
        self._check_baselines()
        for key, _ in method_sections():  # checks across sections (a section cannot see the others when parsed)
            section = getattr(self, key)
            if hasattr(section, "check_against"):
                section.check_against(self)

    def _check_baselines(self) -> None:
        """Cross-section checks of the baseline params (a section cannot see the others when it is parsed)."""
        b = self.baselines
        for name in b.networks:
            if name not in self.networks:
                raise UserError(f"baselines.networks names {name!r}, which is not a key of networks ({', '.join(self.networks)})")
            net = self.networks[name]
            if net.dataset not in self.sweep.datasets:
                raise UserError(f"networks.{name}.dataset={net.dataset!r} is not in sweep.datasets {self.sweep.datasets}: add it")
        # the ablations and CS's random control read the CS tickets of these (network, s0, seed)
        check_listed("baselines.networks", b.networks, self.sweep.networks, "sweep.networks",
                     "the ablations need the CS tickets there")

    def network(self, name: str) -> NetworkParams:
        if name not in self.networks:
            raise UserError(f"unknown network {name!r}; params.yaml defines: {', '.join(self.networks)}")
        return self.networks[name]


def method_sections() -> list[tuple[str, type]]:
    """(params.yaml key, dataclass) of every method's own sections, in registry order: each method module
    declares them in its `PARAMS`, and `cs_repro.methods.METHODS` names the modules."""
    import importlib

    from cs_repro.methods import METHODS

    sections: dict[str, type] = {}
    for name in METHODS:
        module = importlib.import_module(METHODS.get(name).module)
        for key, section in getattr(module, "PARAMS", {}).items():
            sections.setdefault(key, section)
    return list(sections.items())


def _section_help(section: type) -> str:
    return (section.__doc__ or "").strip().splitlines()[0]


#: All of params.yaml: the shared sections and every registered method's.
Params = dataclasses.make_dataclass(
    "Params",
    [(key, section, field(default_factory=section, metadata={"help": _section_help(section)}))
     for key, section in method_sections()],
    bases=(CoreParams,),
)
Params.__module__ = __name__
Params.__doc__ = "All of params.yaml: the shared sections (CoreParams) and every registered method's own."


# --- parsing ---------------------------------------------------------------------------------------

_YAML_KEY = {"lambda_": "lambda"}


def _yaml_key(name: str) -> str:
    return _YAML_KEY.get(name, name)


def _convert(value: Any, kind: Any, where: str, meta: dict) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return _build(kind, value, where)
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [_convert(item, item_kind, f"{where}[{i}]", {}) for i, item in enumerate(value)]
    if origin is dict:
        _, item_kind = typing.get_args(kind)
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(v, item_kind, f"{where}.{k}", {}) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        _check_range(value, where, meta)
        return value
    if kind is float:
        number = parse_float(value, where)
        _check_range(number, where, meta)
        return number
    if kind is str:
        if not isinstance(value, str):
            value = "" if value is None else str(value)
        if "choices" in meta and value not in meta["choices"]:
            raise UserError(f"{where}={value!r} is not allowed; choose one of: {', '.join(meta['choices'])}")
        return value
    raise TypeError(f"unsupported parameter type {kind!r} at {where}")


def parse_float(value: Any, where: str) -> float:
    """A float from a number or a numeric string ('1e-09' as DVC writes it); anything else is an error."""
    if isinstance(value, bool):
        raise UserError(f"{where} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise UserError(f"{where} must be a number, got {value!r}") from None
    else:
        raise UserError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    return check_float32(number, where)


def _check_range(value: float, where: str, meta: dict) -> None:
    if "min" in meta and value < meta["min"]:
        raise UserError(f"{where}={value} must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"{where}={value} must be <= {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise UserError(f"{where}={value} must be > {meta['min_exclusive']}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise UserError(f"{where}={value} must be < {meta['max_exclusive']}")


#: Keys of an earlier params.yaml and where that setting lives now (a params file kept from then says so).
MOVED_KEYS = {"random_control": "controls.random (was random_control.enabled)",
              "imp.continue_levels": "imp_c.levels (with imp_c.networks)",
              "baselines.l0_penalty": "l0.penalties",
              "baselines.cs_s0": "ablations.s0",
              "baselines.seeds": "sweep.seeds (every method runs on every seed)",
              "sensitivity.seeds": "sweep.seeds (every method runs on every seed)"}


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        if key in MOVED_KEYS:
            raise UserError(f"{key} has moved: set {MOVED_KEYS[key]} instead")
        raise UserError(f"unknown key {key}; allowed keys here: {', '.join(sorted(fields))}")
    values = {}
    for key, f in fields.items():
        if key in raw:
            sub_where = f"{where}.{key}" if where else key
            values[f.name] = _convert(raw[key], hints[f.name], sub_where, dict(f.metadata))
    return cls(**values)


def params_from_dict(raw: dict) -> Params:
    if not isinstance(raw, dict):
        raise UserError("params must be a YAML mapping at the top level")
    params = _build(Params, raw, "")
    params.validate()
    return params


def _repeated_key(node: yaml.Node, path: str = "") -> str | None:
    """'<dotted key> appears twice (lines a and b)' for the first key a mapping repeats, else None.
    PyYAML keeps the last value silently; DVC refuses the file, so the check must too."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in seen:
                return f"{path}{key} appears twice (lines {seen[key]} and {line})"
            if key is not None:
                seen[key] = line
            found = _repeated_key(value_node, f"{path}{key}.")
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _repeated_key(item, f"{path[:-1]}[{index}].")
            if found:
                return found
    return None


def read_params_yaml(path: Path) -> Any:
    """A params file's YAML, refusing one that repeats a key (one line naming it and its lines)."""
    text = path.read_text()
    try:
        repeated = _repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
        if repeated:
            raise UserError(f"{path}: {repeated}; keep one")
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run from the repository root or pass --params PATH")
    return params_from_dict(read_params_yaml(path) or {})


def describe(cls: type = Params, prefix: str = "", current: Any = None) -> list[tuple[str, str, str, str]]:
    """(key, default, current value, help) for every field, nested sections flattened: the `cs-repro params`
    listing.  ``current`` is a loaded Params (or section); without it the current column is empty, and
    each named section (``networks``) is listed once as ``<name>``; with it, once per name it holds."""
    rows = []
    for f in dataclasses.fields(cls):
        key = prefix + _yaml_key(f.name)
        kind = typing.get_type_hints(cls)[f.name]
        value = getattr(current, f.name) if current is not None else None
        if dataclasses.is_dataclass(kind):
            rows.extend(describe(kind, key + ".", value))
        elif typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            section = typing.get_args(kind)[1]
            if current is None:
                rows.extend(describe(section, key + ".<name>."))
            for name, entry in (value or {}).items():
                rows.extend(describe(section, f"{key}.{name}.", entry))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = "" if current is None else repr(value)
            rows.append((key, repr(default), shown, f.metadata.get("help", "")))
    return rows


