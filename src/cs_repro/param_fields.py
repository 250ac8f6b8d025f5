"""How a params section declares a field: its default, its help text (`cs-repro params` shows it) and the
checks loading applies (min, max, min_exclusive, max_exclusive, choices). Method modules declare their
own sections with it, so this module imports nothing heavier than the error type."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from cs_repro.errors import UserError

#: Seeds are used with offsets (reinit weights, random masks) and must fit torch's generators with room.
MAX_SEED = 2**31 - 1

#: Training runs in float32 (CUDA, CPU): every float param must be a float32 number.
FLOAT32_MAX = 3.4028234663852886e38

#: CS divides its mask by sigmoid(s0) (masks.SoftMask.scale): below this s0, 1/sigmoid(s0) exceeds
#: FLOAT32_MAX (ln(FLOAT32_MAX) = 88.72) and every masked weight becomes inf.
MIN_S0 = -88.0


def param(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its help text and the checks `cs_repro.params` applies when loading."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def check_seed(seed: int, where: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{where}: {seed!r} is not a seed; use a whole number from 0 to {MAX_SEED}")
    return seed


def check_float32(value: float, where: str) -> float:
    if abs(value) > FLOAT32_MAX:
        raise UserError(f"{where}={value:g} is outside float32's range (magnitude at most {FLOAT32_MAX:.4g}), "
                        "the precision training runs in")
    return value


def check_s0(s0: float, where: str = "s0") -> float:
    """An s0 whose mask scale 1/sigmoid(s0) is a float32 number."""
    check_float32(s0, where)
    if s0 < MIN_S0:
        raise UserError(f"{where}: s0={s0:g} is below {MIN_S0:g}, where CS's mask scale 1/sigmoid(s0) overflows "
                        "float32; masks start near 0 already at s0=-10")
    return s0


def check_listed(key: str, values: list, allowed: list, allowed_key: str, why: str = "") -> None:
    """A fan-out list that must stay within another (e.g. slimming.networks within baselines.networks): each
    value one that `allowed_key` runs, none twice; `why` says what needs it there."""
    outside = [value for value in values if value not in allowed]
    if outside:
        raise UserError(f"{key} has {outside}, which {allowed_key} ({', '.join(map(str, allowed)) or 'none'}) "
                        f"does not run{'; ' + why if why else ''}")
    if len(set(values)) != len(values):
        raise UserError(f"{key} must not repeat a value")
