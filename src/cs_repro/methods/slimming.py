"""Network slimming (Liu et al. 2017), the pruning baseline reviewer 3 asked for.

1. Training with sparsity on the channel scales: loss = CE + penalty * sum |gamma| over the BatchNorm
   scales of the prunable channels (`SlimmingTraining`), for E epochs from initialisation.
2. Global channel pruning: channels are removed in order of |gamma|, smallest first, across all layers,
   until the prunable weights they take with them reach the target sparsity (`prune_channels`).
   Removing channel c of a conv -> BatchNorm -> ReLU (-> pool) -> conv chain zeroes the producing conv's
   output filter c and the consuming conv's input channel c; with the consumer's input zero the channel
   no longer reaches the output, so a weight mask is the pruned network exactly. At least one channel
   of each layer stays.
3. Fine-tuning: the pruned network trains on from its trained weights with the network's own schedule
   (lr and milestones, E epochs by default), as Liu et al. fine-tune.

Which channels can go is read from the network's graph (`channel_groups`, torch.fx): a BatchNorm whose
output reaches only convolutions, through ReLU, pooling or dropout, and whose input is a convolution,
both prunable. A channel that enters a residual sum, a flatten or a classifier is kept, so ResNet-20
prunes the inner channels of each block and VGG-16 all but its last conv's. Networks without BatchNorm
(the LeNets) have nothing to slim: `slimming.networks` leaves them out (no stages), and a stage run on
one anyway writes a skipped marker.

Reported in the pruning track (variant `finetuned`) at the remaining weights it reaches, next to GMP
and one-shot magnitude pruning. The target is met to within one channel's weights unless the
prunable channels hold too few weights; the row carries what was reached.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from cs_repro.errors import UserError
from cs_repro.io import atomic_torch_save, safe_torch_load, write_skipped
from cs_repro.masks import plain_state_dict
from cs_repro.methods.magnitude import kept_count
from cs_repro.models.base import check_image_input
from cs_repro.methods.retrain import TicketRetrain
from cs_repro.param_fields import check_listed, param
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, last_epoch_row, make_model,
                          model_outline, network_config, sub_dir, ticket_digest, ticket_metadata)
from cs_repro.tickets import Ticket, save_ticket
from cs_repro.train import Hooks, TrainingLoop

if TYPE_CHECKING:
    from cs_repro.params import Params

log = logging.getLogger("cs_repro")


@dataclass
class SlimmingParams:
    """Network slimming (Liu et al. 2017): L1 on BatchNorm scales, global channel pruning, fine-tuning."""

    penalty: float = param(1e-4, "s: weight of sum |gamma| (BatchNorm scales of prunable channels) in the loss",
                           min=0.0)
    finetune_epochs: int = param(0, "fine-tuning epochs with the network's schedule; 0 = the network's epochs E",
                                 min=0)
    networks: list[str] = param([], "keys of `networks` to slim, each in baselines.networks and with BatchNorm "
                                    "channels ([] = no slimming stages; the LeNets have none)")

    def check_against(self, params: Params) -> None:
        check_listed("slimming.networks", self.networks, params.baselines.networks, "baselines.networks")
        for network in self.networks:
            model, names = model_outline(params.network(network))
            if not channel_groups(model, names):
                raise UserError(f"slimming.networks names {network}, whose model {params.network(network).model} "
                                "has no BatchNorm channels that slimming can remove: slimming needs BatchNorm "
                                "(resnet20, vgg16)")


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"slimming": SlimmingParams}

TRAINED_FORMAT = "cs-repro-slimming-trained/1"
_PASS_THROUGH_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)
_PASS_THROUGH_FUNCTIONS = (F.relu, torch.relu, F.max_pool2d, F.avg_pool2d, F.dropout)


@dataclass(frozen=True)
class ChannelGroup:
    """The channels of one BatchNorm: `producer`'s output filters, `consumers`' input channels."""

    batchnorm: str  # module name
    producer: str  # weight name, channels on dim 0
    consumers: tuple[str, ...]  # weight names, channels on dim 1


def channel_groups(model: nn.Module, prunable: list[str]) -> list[ChannelGroup]:
    """Every BatchNorm2d whose channels can be removed by masking prunable conv weights (see the module
    docstring), in graph order."""
    if not any(isinstance(module, nn.BatchNorm2d) for module in model.modules()):
        return []
    try:  # the models' input check is plain Python on the input's shape: traced as one opaque call
        graph = fx.Tracer(autowrap_functions=(check_image_input,)).trace(model)
    except fx.proxy.TraceError as error:
        raise UserError(f"network slimming cannot read the graph of {type(model).__name__} ({error})") from None
    modules = dict(model.named_modules())
    allowed = set(prunable)

    def module_of(node: fx.Node) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def is_conv(node: fx.Node) -> bool:
        conv = module_of(node)
        return isinstance(conv, nn.Conv2d) and conv.groups == 1 and f"{node.target}.weight" in allowed

    def passes_through(node: fx.Node) -> bool:
        return (isinstance(module_of(node), _PASS_THROUGH_MODULES)
                or (node.op == "call_function" and node.target in _PASS_THROUGH_FUNCTIONS)
                or (node.op == "call_method" and node.target in ("relu", "relu_")))

    groups = []
    for node in graph.nodes:
        if not isinstance(module_of(node), nn.BatchNorm2d) or not node.args or not is_conv(node.args[0]):
            continue
        consumers, frontier, ok = [], list(node.users), True
        while frontier and ok:
            user = frontier.pop()
            if is_conv(user):
                consumers.append(f"{user.target}.weight")
            elif passes_through(user):
                frontier.extend(user.users)
            else:
                ok = False  # a residual sum, a flatten, a classifier, the output: the channel must stay
        if ok and consumers:
            groups.append(ChannelGroup(node.target, f"{node.args[0].target}.weight", tuple(dict.fromkeys(consumers))))
    return groups


@torch.no_grad()
def prune_channels(weights: dict[str, Tensor], scales: dict[str, Tensor], groups: list[ChannelGroup],
                   sparsity: float) -> tuple[dict[str, Tensor], int]:
    """Masks for every prunable weight (`weights`: name -> tensor) after removing channels by |gamma|,
    smallest first across all groups, until kept_count(sparsity, N) weights remain or nothing more can go.
    Ties are broken by (group order, channel index), so the result is deterministic. Returns the masks and
    the number of channels removed."""
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    to_remove = total - kept_count(sparsity, total)
    candidates = sorted(((float(scales[g.batchnorm][c].abs()), gi, c) for gi, g in enumerate(groups)
                         for c in range(scales[g.batchnorm].numel())))
    left = {g.batchnorm: scales[g.batchnorm].numel() for g in groups}
    removed = channels = 0
    for _, gi, channel in candidates:
        if removed >= to_remove:
            break
        group = groups[gi]
        if left[group.batchnorm] == 1:
            continue  # a layer keeps at least one channel
        slices = [masks[group.producer][channel]] + [masks[name][:, channel] for name in group.consumers]
        removed += sum(int(s.sum()) for s in slices)
        for s in slices:
            s.zero_()
        left[group.batchnorm] -= 1
        channels += 1
    return masks, channels


class SlimmingTraining(Hooks):
    """Training with penalty * sum |gamma| added to the loss for the BatchNorms of `groups`."""

    label = "slimming"

    def __init__(self, groups: list[ChannelGroup], penalty: float) -> None:
        self.groups = groups
        self.penalty = penalty
        self._scales: list[Tensor] = []

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        modules = dict(loop.model.named_modules())
        self._scales = [modules[g.batchnorm].weight for g in self.groups]

    def loss(self, loop: TrainingLoop, logits: Tensor, labels: Tensor) -> Tensor:
        loss = super().loss(loop, logits, labels)
        if self.penalty:
            loss = loss + self.penalty * sum(scale.abs().sum() for scale in self._scales)
        return loss

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        with torch.no_grad():
            gammas = torch.cat([scale.detach().abs().flatten() for scale in self._scales]).double()
        # rounded like the CS penalty: a float sum must not depend on the thread count
        return {"mean_abs_gamma": round(float(gammas.mean()), 6), "remaining_weights": 1.0, "sparsity": 0.0}


# --- network slimming as its stages run it ---------------------------------------------------------


def slimming_settings(params: Params) -> dict[str, Any]:
    """What shapes a slimming run (recorded in its config, keying its checkpoints): the section without its
    fan-out list, so that slimming one more network changes nothing for the others."""
    return {key: value for key, value in dataclasses.asdict(params.slimming).items() if key != "networks"}


def run_slimming_train(params: Params, network: str, seed: int, out_dir: Path, device: torch.device,
                       checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> bool:
    """Step 1: train with the L1 penalty on the prunable channels' BatchNorm scales; trained.pt holds the
    final weights for every target sparsity's pruning. A network without such channels writes skipped.json
    markers instead and returns False."""
    net = params.network(network)
    model, names = make_model(net, seed, torch.device("cpu"))
    groups = channel_groups(model, names)
    if not groups:
        reason = f"{net.model} has no BatchNorm channels that slimming can remove"
        write_skipped(reason, out_dir, timing_dir)
        log.info("network slimming skipped: %s", reason)
        return False
    run = RunSpec("slimming_train", network, seed, "", {"slimming": slimming_settings(params),
                                                        "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    history = training.train(run, SlimmingTraining(groups, params.slimming.penalty))
    atomic_torch_save({"format": TRAINED_FORMAT, "final_state": plain_state_dict(training.model),
                       "groups": [dataclasses.asdict(g) for g in groups],
                       "metadata": {"network": network, "model": net.model, "seed": seed, "epochs": net.epochs}},
                      Path(out_dir) / "trained.pt")
    training.finish(out_dir, final_metrics(history))
    return True


def run_slimming(params: Params, network: str, sparsity: float, seed: int, trained_dir: Path, out_dir: Path,
                 device: torch.device, checkpoint_dir: Path | None = CHECKPOINT_DIR,
                 timing_dir: Path | None = None) -> Ticket | None:
    """Steps 2 and 3: prune the trained network's channels globally by |gamma| to `sparsity`, fine-tune it;
    pruned.pt (mask + fine-tuned weights) and metrics.json with its row (method slimming, variant
    finetuned, track pruning)."""
    trained_dir, out_dir = Path(trained_dir), Path(out_dir)
    if (trained_dir / "skipped.json").exists():
        write_skipped(f"no trained network: {trained_dir} was skipped", out_dir, timing_dir)
        return None
    net = params.network(network)
    trained = safe_torch_load(trained_dir / "trained.pt", "slimming's trained network")
    if trained.get("format") != TRAINED_FORMAT or trained["metadata"].get("model") != net.model \
            or trained["metadata"].get("seed") != seed:
        raise UserError(f"{trained_dir}/trained.pt is not the slimming-trained {net.model} of seed {seed}: "
                        "rerun slimming_train")
    groups = [ChannelGroup(g["batchnorm"], g["producer"], tuple(g["consumers"])) for g in trained["groups"]]
    state = trained["final_state"]
    _, names = make_model(net, seed, torch.device("cpu"))
    masks, channels = prune_channels({n: state[n] for n in names}, {g.batchnorm: state[f"{g.batchnorm}.weight"]
                                                                    for g in groups}, groups, sparsity)
    setting = f"sparsity={sparsity:g}"
    ft_epochs = params.slimming.finetune_epochs or net.epochs
    # "dense": the network it pruned, whose training is its search cost (as for one-shot magnitude pruning)
    config = {"sparsity": sparsity, "dense": str(trained_dir), "channels_removed": channels,
              "slimming": slimming_settings(params), "network": network_config(params, network)}
    ticket = Ticket(masks, state, ticket_metadata(
        "slimming", network, net, seed, setting, config, net.epochs, target_sparsity=sparsity,
        weights="trained weights before fine-tuning (not a rewind point)")).with_counts()
    ticket_path = out_dir / "pruned.pt"
    save_ticket(ticket, ticket_path)

    ft_params = dataclasses.replace(params, networks={**params.networks,
                                                      network: dataclasses.replace(net, epochs=ft_epochs)})
    run = RunSpec("slimming", network, seed, setting, {"ticket": ticket_digest(ticket_path),
                                                       "finetune_epochs": ft_epochs,
                                                       "network": network_config(params, network)})
    training = TrainingRun(ft_params, network, seed, device, checkpoint_dir, sub_dir(timing_dir, "finetune"))
    history = training.train(run, TicketRetrain({k: v.to(device) for k, v in masks.items()}, state, label="slimming"))
    rows = [last_epoch_row("slimming", "finetuned", "pruning", seed, setting, ticket.metadata, history[-1], net.epochs,
                           ft_epochs, ticket_path, out_dir / "finetune")]
    training.finish(out_dir / "finetune", final_metrics(history, remaining_weights=ticket.metadata["remaining_weights"],
                                                        retrain_epochs=ft_epochs),
                    {"result_rows": rows})
    log.info("%s: slimming removed %d channels, keeps %.2f%% of prunable weights; fine-tuned test %.2f%%",
             run.label(), channels, 100 * ticket.metadata["remaining_weights"], 100 * history[-1].test_accuracy)
    return ticket
