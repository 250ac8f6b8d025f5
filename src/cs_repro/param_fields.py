"""How a params section declares a field: its default, its help text (`cs-repro params` shows it) and the
checks loading applies (min, max, min_exclusive, max_exclusive, choices). Method modules declare their
own sections with it, so this module imports nothing heavier than the error type."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from cs_repro.errors import UserError

#: Seeds are used with offsets (reinit weights, random masks) and must fit torch's generators with room.
MAX_SEED = 2**31 - 1


def param(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its help text and the checks `cs_repro.params` applies when loading."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def check_seed(seed: int, where: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{where}: {seed!r} is not a seed; use a whole number from 0 to {MAX_SEED}")
    return seed


def check_listed(key: str, values: list, allowed: list, allowed_key: str, why: str = "") -> None:
    """A fan-out list that must stay within another (e.g. slimming.networks within baselines.networks): each
    value one that `allowed_key` runs, none twice; `why` says what needs it there."""
    outside = [value for value in values if value not in allowed]
    if outside:
        raise UserError(f"{key} has {outside}, which {allowed_key} ({', '.join(map(str, allowed)) or 'none'}) "
                        f"does not run{'; ' + why if why else ''}")
    if len(set(values)) != len(values):
        raise UserError(f"{key} must not repeat a value")
