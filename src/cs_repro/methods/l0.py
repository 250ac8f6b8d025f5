"""L0 regularisation with hard-concrete gates (Louizos, Welling, Kingma 2018), the reviewers' baseline.

Every prunable weight W gets a gate z of the same shape with its own location parameter log_alpha;
the network sees W * z through `torch.nn.utils.parametrize` (like CS's soft masks in `cs_repro.masks`).

* Training: one u ~ U(0, 1) per gate and step (shared by the batch), drawn from a generator seeded by
  (seed, phase, epoch) so a run is deterministic and resumes to the same numbers:
  s = sigmoid((log u - log(1-u) + log_alpha) / beta), s_bar = s * (zeta - gamma) + gamma, z = clamp(s_bar, 0, 1).
* Test time (eval mode): z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1).
* Penalty (expected number of non-zero gates): sum sigmoid(log_alpha - beta * log(-gamma / zeta)),
  weighted by the L0 lambda (`--penalty`, swept over `l0.penalties`).
* Binary mask: the deterministic gate is non-zero, i.e. log_alpha > log(-gamma / zeta).

Constants as in the paper: gamma = -0.1, zeta = 1.1, beta = 2/3. The weights keep the network's SGD
settings (the same as every other method); the log_alpha get their own optimiser, Adam (Louizos et al.
train with Adam; with SGD the penalty's gradient, the same for every gate, dwarfs the loss's per-gate
signal, so all gates closed together: measured on LeNet-300-100, 100% kept at lambda 0.03, 0% at 0.1),
with lr `l0.gate_lr` on the same schedule and no weight decay.
Training runs `rounds` phases of E epochs (the lr schedule restarts, optimiser state carries over);
the rewind point is the full model state after epoch k of the first phase, as for CS and IMP.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from cs_repro.errors import UserError
from cs_repro.masks import attach_parametrizations, sparsity_of
from cs_repro.methods.rounds import MaskRounds
from cs_repro.param_fields import check_listed, param
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, last_epoch_row, network_config,
                          ticket_metadata)
from cs_repro.tickets import Ticket, save_ticket
from cs_repro.train import TrainingLoop, epoch_seed

if TYPE_CHECKING:
    from cs_repro.params import Params


log = logging.getLogger("cs_repro")


@dataclass
class L0Params:
    """L0 regularisation with hard-concrete gates (Louizos et al. 2018), one run per lambda."""

    penalties: list[float] = param([1e-4], "L0 lambdas, each its own run on baselines.networks x sweep.seeds "
                                           "(its sparsity follows from it)")
    droprate_init: float = param(0.3, "initial drop rate p: log_alpha starts at log(1-p) - log(p)",
                                 min_exclusive=0.0, max_exclusive=1.0)
    rounds: int = param(1, "phases of E epochs (lr schedule restarts, optimiser state carries over)", min=1)
    gate_lr: float = param(0.01, "Adam lr of the gate parameters log_alpha (on the weights' lr schedule)",
                           min_exclusive=0.0)
    retrain_networks: list[str] = param([], "keys of `networks` whose L0 tickets are retrained from the rewind point "
                                            "(stage l0_retrain), each in baselines.networks; the profiles set "
                                            "${baselines.networks} ([] = L0's pruning track alone)")

    def check_against(self, params: Params) -> None:
        check_listed("l0.retrain_networks", self.retrain_networks, params.baselines.networks, "baselines.networks",
                     "its tickets come from the l0_search stages there")

    def __post_init__(self) -> None:
        if any(value < 0.0 for value in self.penalties):
            raise UserError(f"l0.penalties: {self.penalties} must all be >= 0")
        if len(set(self.penalties)) != len(self.penalties):
            raise UserError("l0.penalties must not repeat a value")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"l0": L0Params}

GAMMA = -0.1
ZETA = 1.1
BETA = 2.0 / 3.0
NOISE_SEED_OFFSET = 7_919  # the gate noise is drawn independently of the data order (same seed formula)
_EPS = 1e-6


@dataclass(frozen=True)
class L0Config:
    penalty: float  # the L0 lambda
    droprate_init: float = 0.3  # initial P(gate closed) in Louizos et al.'s parametrisation
    rounds: int = 1
    gate_lr: float = 0.01  # Adam, as in Louizos et al.
    rewind_epoch: int = 1
    rewind_iteration: int = 0  # > 0: the rewind point in optimiser steps instead
    gamma: float = GAMMA
    zeta: float = ZETA
    beta: float = BETA


def initial_log_alpha(droprate_init: float) -> float:
    """log_alpha = log(1 - p) - log(p), Louizos et al.'s initialisation for a drop rate p."""
    return math.log(1.0 - droprate_init) - math.log(droprate_init)


def sample_gates(log_alpha: Tensor, u: Tensor, gamma: float = GAMMA, zeta: float = ZETA, beta: float = BETA) -> Tensor:
    """The stretched, clamped hard-concrete sample z for uniform noise u (differentiable in log_alpha)."""
    u = u.clamp(_EPS, 1.0 - _EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def deterministic_gates(log_alpha: Tensor, gamma: float = GAMMA, zeta: float = ZETA) -> Tensor:
    """The test-time gate clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)."""
    return (torch.sigmoid(log_alpha) * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def prob_nonzero(log_alpha: Tensor, gamma: float = GAMMA, zeta: float = ZETA, beta: float = BETA) -> Tensor:
    """P(z != 0) = 1 - Q(s_bar <= 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)): the expected-L0 term."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def prob_one(log_alpha: Tensor, gamma: float = GAMMA, zeta: float = ZETA, beta: float = BETA) -> Tensor:
    """P(z = 1) = P(s_bar >= 1) = sigmoid(log_alpha - beta * log((1 - gamma) / (zeta - 1))).

    z = 1 exactly when s >= t = (1 - gamma) / (zeta - gamma); with s = sigmoid((L + log_alpha) / beta) and
    L = log u - log(1 - u) standard logistic, P(s >= t) = P(L >= beta * logit(t) - log_alpha)
    = sigmoid(log_alpha - beta * logit(t)), and logit(t) = log((1 - gamma) / (zeta - 1))."""
    return torch.sigmoid(log_alpha - beta * math.log((1.0 - gamma) / (zeta - 1.0)))


class HardConcreteGate(nn.Module):
    """A parametrization: W -> W * z with hard-concrete gates z (sampled in training, deterministic in eval)."""

    def __init__(self, shape: torch.Size, log_alpha: float, config: L0Config, device=None, dtype=None) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(shape, float(log_alpha), device=device, dtype=dtype))
        self.gamma, self.zeta, self.beta = config.gamma, config.zeta, config.beta
        self.generator: torch.Generator | None = None

    def gates(self) -> Tensor:
        if self.training:
            if self.generator is None:
                raise RuntimeError("L0 gate noise has no generator: the L0 hooks set one at every epoch")
            u = torch.rand(self.log_alpha.shape, generator=self.generator, device=self.log_alpha.device,
                           dtype=self.log_alpha.dtype)
            return sample_gates(self.log_alpha, u, self.gamma, self.zeta, self.beta)
        return deterministic_gates(self.log_alpha, self.gamma, self.zeta)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.gates()

    def expected_l0(self) -> Tensor:
        return prob_nonzero(self.log_alpha, self.gamma, self.zeta, self.beta).sum()

    @torch.no_grad()
    def binary_mask(self) -> Tensor:
        """Deterministic gate > 0, i.e. log_alpha > log(-gamma / zeta) (computed on the logit: no rounding)."""
        return self.log_alpha > math.log(-self.gamma / self.zeta)


class L0Gates:
    """Hard-concrete gates attached to a model's prunable weights."""

    def __init__(self, model: nn.Module, names: list[str], parts: dict[str, HardConcreteGate]) -> None:
        self.model, self.names, self.parts = model, names, parts

    @classmethod
    def attach(cls, model: nn.Module, names: list[str] | None, config: L0Config) -> "L0Gates":
        log_alpha = initial_log_alpha(config.droprate_init)
        names, parts = attach_parametrizations(
            model, names,
            lambda weight: HardConcreteGate(weight.shape, log_alpha, config, device=weight.device, dtype=weight.dtype),
            "gate")
        return cls(model, names, parts)

    def log_alphas(self) -> list[nn.Parameter]:
        return [part.log_alpha for part in self.parts.values()]

    def set_generator(self, generator: torch.Generator) -> None:
        for part in self.parts.values():
            part.generator = generator

    def expected_l0(self) -> Tensor:
        return sum(part.expected_l0() for part in self.parts.values())

    @torch.no_grad()
    def binary_masks(self) -> dict[str, Tensor]:
        return {name: part.binary_mask() for name, part in self.parts.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {name: part.log_alpha.detach().clone() for name, part in self.parts.items()}


class L0Search(MaskRounds):
    """Hooks that train a network with L0 gates: loss = CE + penalty * expected L0 (rounds, rewind point,
    optimisers: `MaskRounds`; the gates use Adam)."""

    label = "l0"

    def __init__(self, gates: L0Gates, config: L0Config) -> None:
        if not 0.0 < config.droprate_init < 1.0:
            raise UserError(f"l0.droprate_init={config.droprate_init} must lie strictly between 0 and 1")
        super().__init__(config.rounds, config.rewind_epoch, config.rewind_iteration)
        self.gates = gates
        self.config = config

    def mask_parameters(self):
        return self.gates.log_alphas()

    def make_mask_optimizer(self, loop: TrainingLoop):
        gate_optimizer = torch.optim.Adam(self.gates.log_alphas(), lr=self.config.gate_lr)
        for group in gate_optimizer.param_groups:
            group["initial_lr"] = self.config.gate_lr  # the loop scales this by the phase's lr schedule
        return gate_optimizer

    def begin_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> None:
        seed = epoch_seed(loop.seed + NOISE_SEED_OFFSET, phase, epoch)
        self.gates.set_generator(torch.Generator(device=loop.device).manual_seed(seed))

    def loss(self, loop: TrainingLoop, logits: Tensor, labels: Tensor) -> Tensor:
        loss = super().loss(loop, logits, labels)
        if self.config.penalty:
            loss = loss + self.config.penalty * self.gates.expected_l0()
        return loss

    def epoch_report(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        report = sparsity_of(self.gates.binary_masks())
        with torch.no_grad():
            expected = float(self.gates.expected_l0())
        return {"remaining_weights": report.remaining_weights, "sparsity": report.sparsity, "expected_l0": expected}


# --- the search as a stage runs it ---------------------------------------------------------------


def run_l0_search(params: Params, network: str, penalty: float, seed: int, out_dir: Path, device: torch.device,
                  checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """L0 training: writes ticket.pt (mask = deterministic gate > 0, rewind weights) and metrics.json whose
    result row is the trained network with its deterministic gates (track pruning)."""
    net = params.network(network)
    config = L0Config(penalty=penalty, droprate_init=params.l0.droprate_init, rounds=params.l0.rounds,
                      gate_lr=params.l0.gate_lr, rewind_epoch=net.rewind_epoch, rewind_iteration=net.rewind_iteration)
    setting = f"penalty={penalty:g}"
    run = RunSpec("l0", network, seed, setting, {"l0": asdict(config), "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    gates = L0Gates.attach(training.model, training.prunable, config)
    hooks = L0Search(gates, config)
    history = training.train(run, hooks)
    search_epochs = config.rounds * net.epochs
    ticket = Ticket({n: m.cpu() for n, m in gates.binary_masks().items()}, hooks.rewind_state,
                    ticket_metadata("l0", network, net, seed, setting, run.config, search_epochs, penalty=penalty)).with_counts()
    save_ticket(ticket, out_dir / "ticket.pt")
    # The loop's last evaluation ran in eval mode, i.e. with the deterministic gates: the pruned network as is.
    rows = [last_epoch_row("l0", "pruned", "pruning", seed, setting, ticket.metadata, history[-1], search_epochs, 0,
                           out_dir / "ticket.pt", out_dir)]
    training.finish(out_dir, final_metrics(history, remaining_weights=ticket.metadata["remaining_weights"],
                                    layer_remaining=ticket.metadata["layer_remaining"], search_epochs=search_epochs),
                    {"result_rows": rows})
    log.info("%s: L0 ticket keeps %.2f%% of prunable weights; gated network test %.2f%%", run.label(),
             100 * ticket.metadata["remaining_weights"], 100 * history[-1].test_accuracy)
    return ticket
