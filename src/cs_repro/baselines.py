"""Assembling the reviewers' baselines and ablations, like `cs_repro.experiment` does for CS and IMP.

Every run goes through the one training loop (`experiment.TrainingRun`) with a method's `Hooks`, and writes a
metrics.json whose `result_rows` the evaluation stage turns into result rows as they are (see
`cs_repro.evaluation`); tickets are written in CS's ticket format and retrained by `experiment.retrain_ticket`.

  run_l0_search          L0 gates (methods/l0.py): ticket (mask + rewind point) and the pruned network
                         with its deterministic gates (method l0, variant pruned, track pruning)
  run_level_random_controls  the random-mask control (experiment.run_random_control) of chosen IMP levels
  run_gmp                gradual magnitude pruning (methods/gmp.py), global or per-layer targets
  run_gmp_cs_layers      ablation: GMP to a CS ticket's layer-wise sparsities vs GMP global to its overall one
  run_magnitude_dense    the dense network one-shot magnitude pruning starts from (final + rewind weights)
  run_magnitude          one-shot global magnitude pruning: rewind ticket + fine-tuned pruned network
  run_cs_ablation        CS with beta = 1 and a threshold on sigmoid(s) (cs_beta1); CS with the released
                         code's between-round clamp (cs_released_clamp)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cs_repro.errors import UserError
from cs_repro.experiment import (
    CHECKPOINT_DIR, RunSpec, TrainingRun, _final, _network_config, _ticket_digest, make_model, mask_scale_for,
    retrain_ticket, run_random_control,
)
from cs_repro.io import atomic_torch_save, atomic_write_json, safe_torch_load
from cs_repro.masks import HardMasks, SoftMasks, plain_state_dict, sparsity_of
from cs_repro.methods.cs import CSConfig, CSSearch
from cs_repro.methods.gmp import GMPConfig, GMPPruning
from cs_repro.methods.l0 import L0Config, L0Gates, L0Search
from cs_repro.methods.magnitude import DenseTraining, one_shot_masks
from cs_repro.methods.retrain import TicketRetrain
from cs_repro.params import Params
from cs_repro.results import run_row
from cs_repro.tickets import Ticket, load_ticket, save_ticket

log = logging.getLogger("cs_repro")

CS_ABLATIONS = ("cs_beta1", "cs_released_clamp")
DENSE_FORMAT = "cs-repro-dense/1"


def _row(method: str, variant: str, track: str, seed: int, setting: str, meta: dict, last, search_epochs: float,
         retrain_epochs: int, ticket_file: Path, run_dir: Path) -> dict[str, Any]:
    """`results.run_row` for a run whose accuracies are those of its loop's last evaluation (`last`)."""
    return run_row(method=method, variant=variant, track=track, seed=seed, setting=setting, ticket_metadata=meta,
                   test_accuracy=last.test_accuracy, val_accuracy=last.val_accuracy, search_epochs=search_epochs,
                   retrain_epochs=retrain_epochs, ticket_file=ticket_file, run_dir=run_dir)


def _ticket_meta(method: str, network: str, net, seed: int, setting: str, config: dict, search_epochs: float,
                 **extra) -> dict[str, Any]:
    return {"method": method, "network": network, "model": net.model, "dataset": net.dataset, "seed": seed,
            "setting": setting, "params": config, "rewind_epoch": net.rewind_epoch, "search_epochs": search_epochs,
            "mask_scale": 1.0, **extra}


def _sub(timing_dir: Path | None, name: str) -> Path | None:
    return Path(timing_dir) / name if timing_dir else None


# --- L0 -------------------------------------------------------------------------------------------


def run_l0_search(params: Params, network: str, penalty: float, seed: int, out_dir: Path, device: torch.device,
                  checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """L0 training: writes ticket.pt (mask = deterministic gate > 0, rewind weights) and metrics.json whose
    result row is the trained network with its deterministic gates (track pruning)."""
    net = params.network(network)
    config = L0Config(penalty=penalty, droprate_init=params.l0.droprate_init, rounds=params.l0.rounds,
                      gate_lr=params.l0.gate_lr, rewind_epoch=net.rewind_epoch)
    setting = f"penalty={penalty:g}"
    run = RunSpec("l0", network, seed, setting, {"l0": asdict(config), "network": _network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    gates = L0Gates.attach(training.model, training.prunable, config)
    hooks = L0Search(gates, config)
    history = training.train(run, hooks)
    search_epochs = config.rounds * net.epochs
    ticket = Ticket({n: m.cpu() for n, m in gates.binary_masks().items()}, hooks.rewind_state,
                    _ticket_meta("l0", network, net, seed, setting, run.config, search_epochs, penalty=penalty)).with_counts()
    save_ticket(ticket, out_dir / "ticket.pt")
    # The loop's last evaluation ran in eval mode, i.e. with the deterministic gates: the pruned network as is.
    rows = [_row("l0", "pruned", "pruning", seed, setting, ticket.metadata, history[-1], search_epochs, 0,
                 out_dir / "ticket.pt", out_dir)]
    training.finish(out_dir, _final(history, remaining_weights=ticket.metadata["remaining_weights"],
                                    layer_remaining=ticket.metadata["layer_remaining"], search_epochs=search_epochs),
                    {"result_rows": rows})
    log.info("%s: L0 ticket keeps %.2f%% of prunable weights; gated network test %.2f%%", run.label(),
             100 * ticket.metadata["remaining_weights"], 100 * history[-1].test_accuracy)
    return ticket


# --- tickets: rewind retraining and the random control ---------------------------------------------


def run_level_random_controls(params: Params, tickets_dir: Path, out_dir: Path, device: torch.device,
                              checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> list[int]:
    """The random-mask control for the level tickets of one IMP search (tickets/level_XX.pt): out/level_XX/
    for every level random_control.imp_levels names ([] = every pruned level). Returns the levels run;
    when the control is switched off, writes the stage's outputs with a marker saying so."""
    tickets_dir, out_dir = Path(tickets_dir), Path(out_dir)
    if not params.random_control.enabled:
        for folder in (out_dir, timing_dir):
            if folder is not None:
                atomic_write_json({"skipped": "random_control.enabled is false"}, Path(folder) / "skipped.json")
        return []
    files = sorted(tickets_dir.glob("level_*.pt"))
    if not files:
        raise UserError(f"no level tickets (level_*.pt) in {tickets_dir}: run the IMP search first")
    by_level = {}
    for path in files:
        level = load_ticket(path).metadata.get("level")
        if not isinstance(level, int):
            raise UserError(f"ticket {path} has no IMP level in its metadata: not an IMP level ticket")
        by_level[level] = path
    wanted = params.random_control.imp_levels or [level for level in by_level if level > 0]
    missing = [level for level in wanted if level not in by_level]
    if missing:
        raise UserError(f"random_control.imp_levels names levels {missing}, which {tickets_dir} does not hold")
    for level in sorted(wanted):
        name = f"level_{level:02d}"
        log.info("random-mask control for %s (%d of %d levels)", by_level[level], sorted(wanted).index(level) + 1,
                 len(wanted))
        run_random_control(params, by_level[level], out_dir / name, device, checkpoint_dir, _sub(timing_dir, name))
    return sorted(wanted)


# --- GMP ------------------------------------------------------------------------------------------


def run_gmp(params: Params, network: str, sparsity: float, seed: int, out_dir: Path, device: torch.device,
            checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None,
            layer_targets: dict[str, float] | None = None, method: str = "gmp", setting: str | None = None) -> Ticket:
    """GMP from initialisation to `sparsity` (or per-layer targets): pruned.pt (mask + final weights) and
    metrics.json (the final network is the result: variant pruned, track pruning; every pruning step)."""
    net = params.network(network)
    setting = setting or f"sparsity={sparsity:g}"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    config = GMPConfig(tuple(training.prunable), sparsity, params.gmp.start, params.gmp.end, params.gmp.frequency,
                       tuple(sorted((layer_targets or {}).items())))
    run = RunSpec(method, network, seed, setting, {"gmp": asdict(config), "network": _network_config(params, network)})
    hooks = GMPPruning(config, label=method)
    history = training.train(run, hooks)
    result = Ticket(hooks.masks, plain_state_dict(training.model), _ticket_meta(
        method, network, net, seed, setting, run.config, net.epochs, target_sparsity=sparsity,
        weights="final trained weights of the pruned network (not a rewind point)")).with_counts()
    save_ticket(result, out_dir / "pruned.pt")
    rows = [_row(method, "pruned", "pruning", seed, setting, result.metadata, history[-1], net.epochs, 0,
                 out_dir / "pruned.pt", out_dir)]
    training.finish(out_dir, _final(history, remaining_weights=result.metadata["remaining_weights"],
                                    layer_remaining=result.metadata["layer_remaining"]),
                    {"result_rows": rows, "pruning_steps": hooks.events})
    log.info("%s: GMP keeps %.2f%%; test %.2f%%", run.label(), 100 * result.metadata["remaining_weights"],
             100 * history[-1].test_accuracy)
    return result


def run_gmp_cs_layers(params: Params, cs_ticket_path: Path, out_dir: Path, device: torch.device,
                      checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> None:
    """Ablation: GMP handed a CS ticket's layer-wise sparsities (out/layerwise, method gmp_cs_layers) next to
    GMP with one global threshold to the same overall sparsity (out/global, method gmp); same seed."""
    ticket = load_ticket(cs_ticket_path)
    meta = ticket.metadata
    report = sparsity_of(ticket.masks)
    layer_targets = {name: 1.0 - kept / total for name, (kept, total) in report.per_layer.items()}
    setting = f"cs {meta['setting']}"
    common = dict(network=meta["network"], sparsity=report.sparsity, seed=int(meta["seed"]), device=device,
                  checkpoint_dir=checkpoint_dir, setting=setting)
    run_gmp(params, out_dir=Path(out_dir) / "layerwise", timing_dir=_sub(timing_dir, "layerwise"),
            layer_targets=layer_targets, method="gmp_cs_layers", **common)
    run_gmp(params, out_dir=Path(out_dir) / "global", timing_dir=_sub(timing_dir, "global"), method="gmp", **common)


# --- one-shot magnitude pruning with rewinding / fine-tuning ---------------------------------------


def run_magnitude_dense(params: Params, network: str, seed: int, out_dir: Path, device: torch.device,
                        checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> None:
    """Train the dense network (as IMP's level 0: same seed, same weights) and keep its final weights and
    rewind point in dense.pt. No result rows: IMP's level 0 is the dense reference."""
    net = params.network(network)
    run = RunSpec("magnitude_dense", network, seed, "", {"rewind_epoch": net.rewind_epoch,
                                                          "network": _network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    hooks = DenseTraining(net.rewind_epoch)
    history = training.train(run, hooks)
    atomic_torch_save({"format": DENSE_FORMAT, "final_state": plain_state_dict(training.model),
                       "rewind_state": hooks.rewind_state,
                       "metadata": {"network": network, "model": net.model, "seed": seed, "epochs": net.epochs,
                                    "rewind_epoch": net.rewind_epoch}}, Path(out_dir) / "dense.pt")
    training.finish(out_dir, _final(history))


def run_magnitude(params: Params, network: str, sparsity: float, seed: int, dense_dir: Path, out_dir: Path,
                  device: torch.device, checkpoint_dir: Path | None = CHECKPOINT_DIR,
                  timing_dir: Path | None = None) -> Ticket:
    """One-shot global magnitude pruning of the trained dense network to `sparsity`:
    ticket.pt (method magnitude_rewind) retrained in out/retrain/{rewind,random}; the pruned trained weights
    fine-tuned for magnitude.finetune_epochs at the final lr in out/finetune (method magnitude_finetune)."""
    net = params.network(network)
    dense = safe_torch_load(Path(dense_dir) / "dense.pt", "dense network")
    if dense.get("format") != DENSE_FORMAT or dense["metadata"].get("model") != net.model or dense["metadata"].get("seed") != seed:
        raise UserError(f"{dense_dir}/dense.pt is not the dense {net.model} of seed {seed}: rerun magnitude_dense")
    setting = f"sparsity={sparsity:g}"
    _, names = make_model(net, seed, torch.device("cpu"))
    masks = one_shot_masks({n: dense["final_state"][n] for n in names}, sparsity)
    config = {"sparsity": sparsity, "dense": str(dense_dir), "network": _network_config(params, network)}
    ticket = Ticket(masks, dense["rewind_state"], _ticket_meta("magnitude_rewind", network, net, seed, setting, config,
                                                                net.epochs, target_sparsity=sparsity)).with_counts()
    ticket_path = Path(out_dir) / "ticket.pt"
    save_ticket(ticket, ticket_path)

    # (b) fine-tuning the pruned trained weights at the schedule's final learning rate.
    ft_epochs = params.magnitude.finetune_epochs or net.epochs
    final_lr = net.lr * net.lr_gamma ** len(net.lr_milestones)
    ft_net = dataclasses.replace(net, epochs=ft_epochs, lr=final_lr, lr_milestones=[], rewind_epoch=0)
    ft_params = dataclasses.replace(params, networks={**params.networks, network: ft_net})
    run = RunSpec("magnitude_finetune", network, seed, setting, {
        "ticket": _ticket_digest(ticket_path), "finetune_epochs": ft_epochs, "lr": final_lr,
        "network": _network_config(params, network)})
    # The split depends only on fields fine-tuning leaves alone (dataset, subsets, batch size).
    training = TrainingRun(ft_params, network, seed, device, checkpoint_dir, _sub(timing_dir, "finetune"))
    hooks = TicketRetrain({k: v.to(device) for k, v in masks.items()}, dense["final_state"], label=run.method)
    history = training.train(run, hooks)
    rows = [_row("magnitude_finetune", "finetuned", "pruning", seed, setting, ticket.metadata, history[-1], net.epochs,
                 ft_epochs, ticket_path, Path(out_dir) / "finetune")]
    training.finish(Path(out_dir) / "finetune",
                    _final(history, remaining_weights=ticket.metadata["remaining_weights"], retrain_epochs=ft_epochs),
                    {"result_rows": rows})

    # (a) rewinding: the ticket retrained from the rewind point, and its random control.
    retrain_ticket(params, ticket_path, ("rewind", "random"), Path(out_dir) / "retrain", device, checkpoint_dir,
                   _sub(timing_dir, "retrain"))
    return ticket


# --- CS ablations ---------------------------------------------------------------------------------


def run_cs_ablation(params: Params, name: str, network: str, s0: float, seed: int, out_dir: Path, device: torch.device,
                    checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> Ticket:
    """cs_beta1: CS with beta = 1 in every epoch, mask = sigmoid(s) > ablations.beta1_threshold after training.
    cs_released_clamp: CS with the released code's between-round clamp s <- min(s, s0).
    Writes out/search/{ticket.pt, metrics.json} (pruned-network row) and retrains the ticket in out/retrain/rewind."""
    if name not in CS_ABLATIONS:
        raise UserError(f"unknown CS ablation {name!r}; choose one of: {', '.join(CS_ABLATIONS)}")
    net = params.network(network)
    beta1 = name == "cs_beta1"
    threshold = params.ablations.beta1_threshold if beta1 else 0.5
    config = CSConfig(
        s0=s0, penalty_weight=params.lambda_, beta_final=1.0 if beta1 else params.cs.beta_final, rounds=params.cs.rounds,
        mask_lr=params.cs.mask_lr, clamp_rule=params.cs.clamp_rule if beta1 else "released", rewind_epoch=net.rewind_epoch,
    )
    setting = f"s0={s0:g}"
    run = RunSpec(name, network, seed, setting, {"cs": asdict(config), "threshold": threshold,
                                                 "mask_scale": params.cs.mask_scale, "network": _network_config(params, network)})
    search_dir = Path(out_dir) / "search"
    training = TrainingRun(params, network, seed, device, checkpoint_dir, _sub(timing_dir, "search"))
    masks = SoftMasks.attach(training.model, training.prunable, s0)
    hooks = CSSearch(masks, config)
    history = training.train(run, hooks)
    cut = math.log(threshold / (1.0 - threshold))  # sigmoid(s) > t  <=>  s > logit(t), without rounding
    binary = {n: (logits > cut).cpu() for n, logits in masks.state_dict().items()}
    search_epochs = config.rounds * net.epochs
    ticket = Ticket(binary, hooks.rewind_state, _ticket_meta(
        name, network, net, seed, setting, run.config, search_epochs, s0=s0, threshold=threshold,
        mask_scale=mask_scale_for(params.cs.mask_scale, s0))).with_counts()
    save_ticket(ticket, search_dir / "ticket.pt")
    # Pruning track as for CS: the trained weights with the binary mask, scaled by 1/sigmoid(s0).
    masks.detach()
    HardMasks.apply(training.model, {n: m.to(device) for n, m in binary.items()},
                    scale=mask_scale_for("released", s0)).remove()
    pruned = training.evaluate()
    last = dataclasses.replace(history[-1], **pruned)
    rows = [_row(name, "pruned", "pruning", seed, setting, ticket.metadata, last, search_epochs, 0, search_dir / "ticket.pt",
                 search_dir)]
    training.finish(search_dir, _final(history, remaining_weights=ticket.metadata["remaining_weights"],
                                       layer_remaining=ticket.metadata["layer_remaining"], search_epochs=search_epochs),
                    {"result_rows": rows, "pruned": pruned})
    retrain_ticket(params, search_dir / "ticket.pt", ("rewind",), Path(out_dir) / "retrain", device, checkpoint_dir,
                   _sub(timing_dir, "retrain"))
    return ticket


__all__ = [
    "run_l0_search", "run_level_random_controls", "run_gmp", "run_gmp_cs_layers",
    "run_magnitude_dense", "run_magnitude", "run_cs_ablation", "CS_ABLATIONS",
]
