"""Result rows: the contract between the evaluation stage and the report.

The evaluation stage writes ``metrics/results.json`` as ``{"rows": [...], "meta": {...}}``, one
row per retrained/evaluated network, each built by ``cs_repro.results`` (where the schema lives).
This module loads that file and checks every row, so that the rest of the report can trust the fields.  A row that lacks a field or holds a value of the
wrong kind raises :class:`RowError` (a ``ValueError``) naming the row index and the field.

It also holds the display names (network, dataset, method, variant) used by figures, tables and
the report, with a fallback to the raw name for anything not listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from cs_repro.errors import UserError
from cs_repro.methods import METHODS
from cs_repro.results import ROW_FIELDS, TRACKS  # noqa: F401  (the schema; re-exported for the report)


#: Keys of ``meta`` the report prints; missing ones are shown as "not recorded".
META_FIELDS = (
    "profile",
    "git_commit",
    "hardware",
    "seeds",
    "total_compute_seconds",
    "flops_convention",
    "matching_rule",
)

NOT_RECORDED = "not recorded"


class RowError(UserError, ValueError):
    """A result row is missing a field or holds an impossible value."""


@dataclass(frozen=True)
class Row:
    """One retrained/evaluated network (see the module docstring for the contract)."""

    network: str
    dataset: str
    method: str
    variant: str
    track: str
    seed: int
    setting: str
    remaining_weights: float
    sparsity: float
    test_accuracy: float
    val_accuracy: float | None  # None: no validation set (val_size 0)
    search_epochs: float
    search_seconds: float
    retrain_epochs: int
    layer_remaining: dict[str, float] = field(hash=False, compare=False)
    params_total: int
    params_nonzero: int
    flops_dense: int
    flops_nonzero: int


def _fail(index: int, name: str, why: str) -> RowError:
    return RowError(f"result row {index}: field {name!r} {why}")


def validate_row(raw: Mapping[str, Any], index: int) -> Row:
    """Check one raw row (a dict) and return it as a :class:`Row`."""
    if not isinstance(raw, Mapping):
        raise RowError(f"result row {index}: expected an object, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    for name, types in ROW_FIELDS.items():
        if name not in raw:
            raise _fail(index, name, "is missing")
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise _fail(index, name, f"must be {wanted}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(index, name, f"must be finite, got {value!r}")
        values[name] = value

    for name in ("network", "dataset", "method", "variant", "setting"):
        if not values[name]:
            raise _fail(index, name, "must not be empty")
    if values["track"] not in TRACKS:
        raise _fail(index, "track", f"must be one of {TRACKS}, got {values['track']!r}")
    rw = float(values["remaining_weights"])
    if not 0.0 < rw <= 1.0:
        raise _fail(index, "remaining_weights", f"must lie in (0, 1], got {rw!r}")
    if abs(float(values["sparsity"]) - (1.0 - rw)) > 1e-6:
        raise _fail(index, "sparsity", f"must equal 1 - remaining_weights, got {values['sparsity']!r}")
    for name in ("test_accuracy", "val_accuracy"):
        if values[name] is not None and not 0.0 <= float(values[name]) <= 1.0:
            raise _fail(index, name, f"must lie in [0, 1], got {values[name]!r}")
    for name in ("search_epochs", "search_seconds", "retrain_epochs", "params_total",
                 "params_nonzero", "flops_dense", "flops_nonzero"):
        if values[name] < 0:
            raise _fail(index, name, f"must not be negative, got {values[name]!r}")
    layers = {}
    for layer, frac in values["layer_remaining"].items():
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
            raise _fail(index, "layer_remaining", f"entry {layer!r} must lie in [0, 1], got {frac!r}")
        layers[str(layer)] = float(frac)
    values["layer_remaining"] = layers
    for name in ("remaining_weights", "sparsity", "test_accuracy", "val_accuracy",
                 "search_epochs", "search_seconds"):
        if values[name] is not None:
            values[name] = float(values[name])
    return Row(**values)


def as_rows(rows: Iterable[Row | Mapping[str, Any]]) -> list[Row]:
    """Validate raw dict rows (``Row`` objects pass through); also reject duplicate seeds.

    Two rows with the same (network, track, method, variant, setting, seed) would be averaged as
    if they were two seeds, so they are an error.
    """
    out: list[Row] = []
    seen: dict[tuple, int] = {}
    for index, raw in enumerate(rows):
        row = raw if isinstance(raw, Row) else validate_row(raw, index)
        key = (row.network, row.track, row.method, row.variant, row.setting, row.seed)
        if key in seen:
            raise RowError(
                f"result row {index}: field 'seed' repeats row {seen[key]} "
                f"(network={row.network}, method={row.method}, variant={row.variant}, "
                f"setting={row.setting}, seed={row.seed})"
            )
        seen[key] = index
        out.append(row)
    datasets: dict[str, str] = {}
    for index, row in enumerate(out):
        if datasets.setdefault(row.network, row.dataset) != row.dataset:
            raise RowError(
                f"result row {index}: field 'dataset' is {row.dataset!r} but network "
                f"{row.network!r} already appeared with {datasets[row.network]!r}; the report keys "
                "panels by network, so one network must use one dataset"
            )
    return out


def normalise_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return meta with every key of :data:`META_FIELDS` present (``"not recorded"`` if absent)."""
    out = dict(meta or {})
    for key in META_FIELDS:
        if out.get(key) in (None, ""):
            out[key] = NOT_RECORDED
    return out


def load_results(path: Path | str) -> tuple[list[Row], dict[str, Any]]:
    """Read ``results.json`` and return (validated rows, meta with every key present)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such results file; run the evaluation stage first") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise UserError(f'{path}: expected {{"rows": [...], "meta": {{...}}}}')
    return as_rows(data["rows"]), normalise_meta(data.get("meta"))


# ---------------------------------------------------------------------------------------------
# Display names.  Unknown names fall back to the raw string, so a new method needs no edit here.

NETWORK_NAMES = {
    "lenet300_100": "LeNet-300-100",
    "lenet5": "LeNet-5",
    "conv2": "Conv-2",
    "conv4": "Conv-4",
    "conv6": "Conv-6",
    "resnet18": "ResNet-18",
    "resnet20": "ResNet-20",
    "resnet20_bn_shortcut": "ResNet-20 (BN shortcut)",
    "resnet50": "ResNet-50",
    "vgg16": "VGG-16",
    "vgg19": "VGG-19",
}
DATASET_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet": "ImageNet",
}
METHOD_NAMES = {name: METHODS.get(name).label for name in METHODS}  # one place: cs_repro.methods
VARIANT_NAMES = {
    "rewind": "rewind",
    "reinit": "reinit",
    "random": "random mask",
    "pruned": "pruned",
    "finetuned": "fine-tuned",
}


def pretty_network(name: str) -> str:
    return NETWORK_NAMES.get(name, name)


def pretty_dataset(name: str) -> str:
    return DATASET_NAMES.get(name, name)


def pretty_method(name: str) -> str:
    return METHOD_NAMES.get(name, name)


def pretty_variant(name: str) -> str:
    return VARIANT_NAMES.get(name, name)
