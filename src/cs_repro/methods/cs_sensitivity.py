"""CS's sensitivity to its hyperparameters (reviewer 2: quantify it; reviewer 3: the appendix on weight
decay, final temperature and s0).

Each setting 'name=value' changes one hyperparameter of the profile and runs one CS search with it, at one
s0 (`sensitivity.s0`, also in `sweep.s0`), then retrains the ticket from its rewind point with the profile's
own settings, so that the value acts on the search alone. The knobs:

  beta_final     beta_T, the temperature in the last epoch of each round (cs.beta_final)
  lambda         the weight of the mask penalty (lambda)
  weight_decay   the weights' weight decay during the search (networks.<net>.weight_decay)

s0 has its own sweep (`sweep.s0`). The profile's own values are the main CS sweep's run at that s0, which
the report draws as each panel's default point. Rows: method `cs_sensitivity`, setting
'name=value (default d, s0=x)'; the search's pruned network (pruning track) and its ticket retrained
(ticket track).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cs_repro.errors import UserError
from cs_repro.methods.cs import run_cs_search
from cs_repro.methods.retrain import retrain_ticket
from cs_repro.param_fields import check_listed, param
from cs_repro.run import CHECKPOINT_DIR, sub_dir
from cs_repro.tickets import Ticket

if TYPE_CHECKING:
    from cs_repro.params import Params

#: The hyperparameters a setting may change, and where the profile keeps each.
KNOBS = {"beta_final": "cs.beta_final", "lambda": "lambda", "weight_decay": "networks.<net>.weight_decay"}


def parse_setting(text: str, where: str = "sensitivity.settings") -> tuple[str, float]:
    """'beta_final=50' -> ('beta_final', 50.0); anything else is one clear error naming `where`."""
    name, sep, value = str(text).partition("=")
    if not sep or name not in KNOBS:
        raise UserError(f"{where}: {text!r} is not 'name=value' with name one of {', '.join(KNOBS)}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{where}: {text!r} has no number after '='") from None
    if not math.isfinite(number) or number < 0 or (name == "beta_final" and number < 1.0):
        raise UserError(f"{where}: {text!r} is out of range (every value >= 0, beta_final >= 1)")
    return name, number


def setting_label(name: str, value: float, default: float, s0: float) -> str:
    """A row's setting: the changed value, the profile's own value and the s0 of the search, e.g.
    'beta_final=50 (default 200, s0=0)'. The report reads the default point (the main CS sweep's run at
    that s0) from it, so results.json alone draws the sensitivity figure."""
    return f"{name}={value:g} (default {default:g}, s0={s0:g})"


def profile_value(params: Params, network: str, name: str) -> float:
    return {"lambda": params.lambda_, "beta_final": params.cs.beta_final,
            "weight_decay": params.network(network).weight_decay}[name]


@dataclass
class SensitivityParams:
    """CS hyperparameter sensitivity: what fans out into the cs_sensitivity stages, on sweep.seeds (read by stage
    commands)."""

    networks: list[str] = param([], "keys of `networks` to sweep ([] = no sensitivity stages); each in sweep.networks")
    s0: float = param(0.0, "s0 of every sensitivity search; must be in sweep.s0")
    settings: list[str] = param([], "one CS search + rewind retraining per 'name=value', name: beta_final, lambda, "
                                    "weight_decay (the value acts on the search only)")

    def __post_init__(self) -> None:
        parsed = [parse_setting(text) for text in self.settings]
        if len(set(parsed)) != len(parsed):
            raise UserError("sensitivity.settings must not repeat a setting")

    def check_against(self, params: Params) -> None:
        if not self.networks:
            return  # no sensitivity stages: nothing to default to
        for key, values, swept in (("networks", self.networks, params.sweep.networks), ("s0", [self.s0], params.sweep.s0)):
            check_listed(f"sensitivity.{key}", values, swept, f"sweep.{key}",
                         "the default point of each sweep is the main CS run")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"sensitivity": SensitivityParams}


def with_setting(params: Params, network: str, name: str, value: float) -> Params:
    """The profile with one hyperparameter changed."""
    if name == "lambda":
        return dataclasses.replace(params, lambda_=value)
    if name == "beta_final":
        return dataclasses.replace(params, cs=dataclasses.replace(params.cs, beta_final=value))
    net = dataclasses.replace(params.network(network), weight_decay=value)
    return dataclasses.replace(params, networks={**params.networks, network: net})


def run_cs_sensitivity(params: Params, network: str, setting: str, seed: int, out_dir: Path, device: torch.device,
                       checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """One setting: the CS search with the changed value (out/search) and its ticket retrained from the rewind
    point with the profile's own settings (out/retrain/rewind)."""
    name, value = parse_setting(setting, "--setting")
    out_dir = Path(out_dir)
    ticket = run_cs_search(with_setting(params, network, name, value), network, params.sensitivity.s0, seed,
                           out_dir / "search", device, checkpoint_dir, sub_dir(timing_dir, "search"),
                           method="cs_sensitivity",
                           setting=setting_label(name, value, profile_value(params, network, name), params.sensitivity.s0))
    retrain_ticket(params, out_dir / "search" / "ticket.pt", ("rewind",), out_dir / "retrain", device, checkpoint_dir,
                   sub_dir(timing_dir, "retrain"))
    return ticket
