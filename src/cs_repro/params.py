"""Typed parameters for every section of params.yaml, each validating itself.

Every field carries a `help` text (shown by `cs-repro params`). Loading rejects unknown keys,
wrong types and out-of-range values with one line naming the key and what is allowed.

Numbers may arrive as strings: `dvc exp run -S lambda=1e-9` writes `1e-09`, which YAML 1.1 (PyYAML)
reads as a string, so float fields accept any string that Python's float() accepts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cs_repro.errors import UserError


def _field(default: Any, help: str, **checks: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class NetworkParams:
    """How one network is trained: used for CS rounds, IMP levels and ticket retraining alike."""

    model: str = _field("lenet300_100", "model registry name (`cs-repro list` shows them)")
    dataset: str = _field("fashion_mnist", "dataset registry name")
    train_subset: int = _field(0, "train on a class-balanced subset of this many images (0 = all)", min=0)
    test_subset: int = _field(0, "evaluate on a class-balanced subset of this many test images (0 = all; quick profile only)", min=0)
    val_size: int = _field(5000, "class-balanced validation images held out of the training set", min=1)
    batch_size: int = _field(128, "mini-batch size", min=1)
    epochs: int = _field(10, "E: epochs per CS round, per IMP level and per ticket retraining", min=1)
    lr: float = _field(0.1, "initial learning rate (SGD)", min_exclusive=0.0)
    momentum: float = _field(0.9, "SGD momentum", min=0.0, max=1.0)
    nesterov: bool = _field(True, "Nesterov momentum")
    weight_decay: float = _field(1e-4, "weight decay on weights (never on mask logits)", min=0.0)
    lr_milestones: list[int] = _field([], "epochs (within a round) at which the lr is multiplied by lr_gamma")
    lr_gamma: float = _field(0.1, "lr multiplier at each milestone", min_exclusive=0.0)
    rewind_epoch: int = _field(1, "k: the rewind point, in epochs of the first round / dense run", min=0)
    augment: bool = _field(False, "pad-4 random crop + horizontal flip (CIFAR)")
    prunable: list[str] = _field([], "glob patterns of prunable weight names; empty = the model's default")
    max_batches: int = _field(0, "truncate every epoch to this many batches (0 = whole epoch; for tests)", min=0)
    bf16: bool = _field(False, "bf16 autocast on CUDA (changes numerics; off for the paper protocol)")

    def validate(self, where: str) -> None:
        if self.rewind_epoch > self.epochs:
            raise UserError(f"{where}.rewind_epoch={self.rewind_epoch} must be <= {where}.epochs={self.epochs}")
        if any(m <= 0 or m >= self.epochs for m in self.lr_milestones):
            raise UserError(f"{where}.lr_milestones={self.lr_milestones} must lie strictly between 0 and epochs={self.epochs}")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise UserError(f"{where}.lr_milestones must be increasing, got {self.lr_milestones}")


@dataclass
class CSParams:
    """Continuous Sparsification search (the per-run s0 comes from sweep.s0)."""

    rounds: int = _field(3, "number of CS rounds (weights are not rewound between rounds)", min=1)
    beta_final: float = _field(200.0, "beta_T: temperature in the last epoch of each round", min=1.0)
    mask_lr: float = _field(0.0, "lr of the mask logits; 0 = same as the weights' lr", min=0.0)
    clamp_rule: str = _field("paper", "between rounds: 'paper' s <- min(beta_T*s, s0); 'released' s <- min(s, s0)",
                             choices=("paper", "released"))
    mask_scale: str = _field("binary", "ticket mask: 'binary' (paper) or 'released' (binary / sigmoid(s0))",
                             choices=("binary", "released"))


@dataclass
class IMPParams:
    """Iterative magnitude pruning with rewinding (global magnitude, fraction per level)."""

    prune_fraction: float = _field(0.2, "p: fraction of the remaining prunable weights removed per level",
                                   min_exclusive=0.0, max_exclusive=1.0)
    levels: int = _field(14, "L: pruning levels after the dense run", min=1)
    continue_levels: int = _field(0, "IMP-C levels (no rewinding during search); 0 = IMP-C not run", min=0)


@dataclass
class ControlParams:
    """Controls retrained next to the tickets."""

    reinit: bool = _field(True, "retrain each ticket's mask from fresh random weights")
    released_scale: bool = _field(
        False, "also retrain each CS ticket as the released code does, binary mask x 1/sigmoid(s0) "
               "(results method cs_released_scale; the paper's plain binary mask stays method cs)")


#: Seeds are used with offsets (reinit weights, random masks) and must fit torch's generators with room.
MAX_SEED = 2**31 - 1


def check_seed(seed: int, where: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{where}: {seed!r} is not a seed; use a whole number from 0 to {MAX_SEED}")
    return seed


@dataclass
class SweepParams:
    """What fans out into DVC stages. Only stage names and commands read these, never a stage body."""

    datasets: list[str] = _field(["fashion_mnist"], "datasets to prepare (every network's dataset must be here)")
    networks: list[str] = _field(["lenet300_100"], "keys of `networks` to run")
    seeds: list[int] = _field([0], "seeds; each one is its own set of stages")
    s0: list[float] = _field([0.0], "CS mask initialisations; each one is its own CS stage")

    def validate(self, where: str) -> None:
        for key in ("datasets", "networks", "seeds", "s0"):
            if not getattr(self, key):
                raise UserError(f"{where}.{key} is empty: list at least one value")
        for seed in self.seeds:
            check_seed(seed, f"{where}.seeds")


@dataclass
class DataParams:
    """Where raw datasets are found."""

    root: str = _field("", "folder holding the raw files ('' = the default places: Debian's package location)")
    download: bool = _field(False, "download with torchvision when the files are not found (needs internet)")
    verify_checksums: bool = _field(True, "check the raw files against known digests")


@dataclass
class Params:
    """All of params.yaml."""

    profile: str = _field("quick", "profile name (quick or paper); informational, set by conf/profile/*.yaml",
                          choices=("quick", "paper", "test"))
    lambda_: float = _field(1e-8, "lambda: weight of the CS mask penalty (key `lambda` in params.yaml)", min=0.0)
    cpu_threads: int = _field(0, "CPU threads of each training stage (0: torch's default, every core); CPU sums differ "
                              "in their last bits across thread counts, so a fixed count gives the same bytes on any "
                              "machine, and 1 lets `cs-repro parallel` run one stage per core", min=0)
    data: DataParams = field(default_factory=DataParams, metadata={"help": "raw data location"})
    networks: dict[str, NetworkParams] = field(default_factory=dict, metadata={"help": "training settings per network"})
    cs: CSParams = field(default_factory=CSParams, metadata={"help": "CS search"})
    imp: IMPParams = field(default_factory=IMPParams, metadata={"help": "IMP search"})
    controls: ControlParams = field(default_factory=ControlParams, metadata={"help": "controls"})
    sweep: SweepParams = field(default_factory=SweepParams, metadata={"help": "fan-out"})
    # The reviewers' baselines and ablations (cs_repro.baselines); their classes are at the end of this file.
    baselines: BaselineSweepParams = field(default_factory=lambda: BaselineSweepParams(),
                                           metadata={"help": "fan-out of the baselines and ablations"})
    l0: L0Params = field(default_factory=lambda: L0Params(), metadata={"help": "L0 (hard-concrete) baseline"})
    gmp: GMPParams = field(default_factory=lambda: GMPParams(), metadata={"help": "gradual magnitude pruning baseline"})
    magnitude: MagnitudeParams = field(default_factory=lambda: MagnitudeParams(),
                                       metadata={"help": "one-shot magnitude pruning with rewinding / fine-tuning"})
    random_control: RandomControlParams = field(default_factory=lambda: RandomControlParams(),
                                                metadata={"help": "random-mask control of baseline tickets"})
    ablations: AblationParams = field(default_factory=lambda: AblationParams(), metadata={"help": "CS ablations"})

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
        for name in self.sweep.networks:
            dataset = self.networks[name].dataset
            if dataset not in self.sweep.datasets:
                raise UserError(f"networks.{name}.dataset={dataset!r} is not in sweep.datasets {self.sweep.datasets}: add it")
        if len(set(self.sweep.seeds)) != len(self.sweep.seeds) or len(set(self.sweep.s0)) != len(self.sweep.s0):
            raise UserError("sweep.seeds and sweep.s0 must not repeat a value")
        self._check_baselines()
        beyond = [level for level in self.random_control.imp_levels if level > self.imp.levels]
        if beyond:
            raise UserError(f"random_control.imp_levels has {beyond}, beyond imp.levels={self.imp.levels}: name levels "
                            f"that exist (e.g. random_control.imp_levels=[{self.imp.levels}]) or [] for every level")

    def _check_baselines(self) -> None:
        """Cross-section checks of the baseline params (a section cannot see the others when it is parsed)."""
        b = self.baselines
        for name in b.networks:
            if name not in self.networks:
                raise UserError(f"baselines.networks names {name!r}, which is not a key of networks ({', '.join(self.networks)})")
            net = self.networks[name]
            if net.dataset not in self.sweep.datasets:
                raise UserError(f"networks.{name}.dataset={net.dataset!r} is not in sweep.datasets {self.sweep.datasets}: add it")
        if self.gmp.start >= self.gmp.end:
            raise UserError(f"gmp.start={self.gmp.start} must be less than gmp.end={self.gmp.end}")
        # gmp_cs_layers and the CS random control read the CS tickets of these (network, s0, seed).
        for key, values, searched in (("networks", b.networks, self.sweep.networks), ("cs_s0", b.cs_s0, self.sweep.s0),
                                      ("seeds", b.seeds, self.sweep.seeds)):
            missing = [v for v in values if v not in searched]
            if missing:
                raise UserError(f"baselines.{key} has {missing}, which sweep.{'s0' if key == 'cs_s0' else key} does not "
                                "search with CS; the ablations need those CS tickets")

    def network(self, name: str) -> NetworkParams:
        if name not in self.networks:
            raise UserError(f"unknown network {name!r}; params.yaml defines: {', '.join(self.networks)}")
        return self.networks[name]


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
    return number


def _check_range(value: float, where: str, meta: dict) -> None:
    if "min" in meta and value < meta["min"]:
        raise UserError(f"{where}={value} must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"{where}={value} must be <= {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise UserError(f"{where}={value} must be > {meta['min_exclusive']}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise UserError(f"{where}={value} must be < {meta['max_exclusive']}")


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(f"unknown key {prefix}{unknown[0]}; allowed keys here: {', '.join(sorted(fields))}")
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


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run from the repository root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    return params_from_dict(raw or {})


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



# --- the reviewers' baselines and ablations (cs_repro.baselines) -----------------------------------
# Cross-section checks (baseline networks defined, ablation s0 values searched by CS) are in
# Params.validate, so `cs-repro params --check` and the first stage that runs catch them.


@dataclass
class BaselineSweepParams:
    """What fans out into the baseline stages. Like `sweep`, read only by stage names and commands."""

    networks: list[str] = _field(["lenet300_100"], "keys of `networks` the baselines and ablations run on")
    seeds: list[int] = _field([0], "seeds of the baseline runs")
    sparsities: list[float] = _field([0.8, 0.9, 0.95], "target sparsities of GMP and one-shot magnitude pruning")
    l0_penalty: list[float] = _field([1e-4], "L0 lambdas: each is its own L0 run (sparsity is steered by it)")
    cs_s0: list[float] = _field([0.0], "s0 of the CS ablations; must be in sweep.s0 (gmp_cs_layers reads that CS ticket)")

    def __post_init__(self) -> None:
        for key in ("networks", "seeds", "sparsities", "l0_penalty", "cs_s0"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise UserError(f"baselines.{key} must not repeat a value")
        for value in self.sparsities:
            if not 0.0 < value < 1.0:
                raise UserError(f"baselines.sparsities: {value} must lie strictly between 0 and 1")
        for value in self.l0_penalty:
            if value < 0.0:
                raise UserError(f"baselines.l0_penalty: {value} must be >= 0")


@dataclass
class L0Params:
    """L0 regularisation with hard-concrete gates (Louizos et al. 2018); lambda comes from baselines.l0_penalty."""

    droprate_init: float = _field(0.3, "initial drop rate p: log_alpha starts at log(1-p) - log(p)",
                                  min_exclusive=0.0, max_exclusive=1.0)
    rounds: int = _field(1, "phases of E epochs (lr schedule restarts, optimiser state carries over)", min=1)
    gate_lr: float = _field(0.01, "Adam lr of the gate parameters log_alpha (on the weights' lr schedule)",
                            min_exclusive=0.0)


@dataclass
class GMPParams:
    """Gradual magnitude pruning (Zhu & Gupta 2017): cubic schedule over optimiser steps. Start and end are
    fractions of the training so that the schedule survives a change of `networks.<net>.epochs`."""

    start: float = _field(0.0, "t0 as a fraction of all training steps (E epochs): pruning starts there",
                          min=0.0, max_exclusive=1.0)
    end: float = _field(0.67, "t0 + n*dt as a fraction of all training steps: the target is reached there",
                        min_exclusive=0.0, max=1.0)
    frequency: int = _field(100, "dt: optimiser steps between pruning steps (shortened to the span if longer)", min=1)


@dataclass
class MagnitudeParams:
    """One-shot global magnitude pruning of a trained dense network (Renda et al. 2020)."""

    finetune_epochs: int = _field(0, "fine-tuning epochs at the final lr; 0 = the network's epochs E", min=0)


@dataclass
class RandomControlParams:
    """Random masks with exactly a ticket's layer-wise counts, retrained from its rewind point."""

    enabled: bool = _field(True, "retrain a random-mask control next to each baseline ticket and the IMP tickets")
    imp_levels: list[int] = _field(
        [], "IMP levels whose tickets get the random-mask control (stage imp_random_control); "
            "[] = every pruned level")

    def __post_init__(self) -> None:
        if any(level < 1 for level in self.imp_levels):
            raise UserError(f"random_control.imp_levels: {self.imp_levels} must name pruned levels (1 or more)")
        if len(set(self.imp_levels)) != len(self.imp_levels):
            raise UserError("random_control.imp_levels must not repeat a value")


@dataclass
class AblationParams:
    """CS ablations asked for by reviewer 1."""

    beta1_threshold: float = _field(0.5, "cs_beta1: keep a weight when sigmoid(s) exceeds this after training",
                                    min_exclusive=0.0, max_exclusive=1.0)
