"""Ticket retraining: a fixed mask, weights from the rewind point (or fresh ones: the reinit control),
trained for E epochs with fresh optimisers. Masked weights stay exactly 0 (see `HardMasks`).

mask_scale c != 1 is the released CS code's retraining: every forward pass computes with c * m * W and
W is what SGD trains (so one step moves the effective weight c**2 times as far as under a plain mask).
weight_scale c != 1 folds the same factor into the rewound weights once (start from c * W_k) and then trains
plainly: the searched network's kept gates reach 1/sigmoid(s0), so this starts from the function the released
retraining starts from, without its c**2 larger steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cs_repro.errors import UserError
from cs_repro.io import write_skipped
from cs_repro.masks import HardMasks, sparsity_of
from cs_repro.methods.cs import mask_scale_for, weight_scale_for
from cs_repro.methods.random_masks import random_generator, random_masks_like
from cs_repro.param_fields import check_listed, param
from cs_repro.results import run_row
from cs_repro.run import (CHECKPOINT_DIR, RunSpec, TrainingRun, final_metrics, network_config, ticket_digest,
                          ticket_network)
from cs_repro.tickets import Ticket, check_ticket_fits, load_ticket, save_ticket
from cs_repro.train import Hooks, TrainingDiverged, TrainingLoop

if TYPE_CHECKING:
    from cs_repro.params import Params


log = logging.getLogger("cs_repro")


@dataclass
class ControlParams:
    """Controls retrained next to the tickets."""

    reinit: bool = param(True, "retrain each ticket's mask from fresh random weights")
    random: bool = param(True, "retrain a random mask with exactly a ticket's layer-wise counts from its rewind "
                               "point, next to each baseline ticket and the IMP tickets (at controls.imp_levels)")
    # The other definitions of a CS ticket (cs.mask_scale says which one is the ticket itself); one that equals
    # cs.mask_scale is not run twice.
    binary_mask: bool = param(
        False, "also retrain each CS ticket the paper's way: binary mask x rewound weights (results method "
               "cs_binary_mask)")
    released_scale: bool = param(
        False, "also retrain each CS ticket as the released code does, binary mask x 1/sigmoid(s0) in every forward "
               "pass (results method cs_released_scale)")
    folded_scale: bool = param(
        False, "also retrain each CS ticket from its rewound weights multiplied once by 1/sigmoid(s0) (the value the "
               "search's kept gates reach), then with a plain binary mask (results method cs_folded_scale)")
    networks: list[str] = param([], "keys of `networks` whose CS tickets are retrained from the rewind point with their "
                                    "controls (stage cs_retrain), each in sweep.networks; the profiles set "
                                    "${sweep.networks} ([] = CS's pruning track alone, as the imagenet profile)")
    imp_levels: list[int] = param(
        [], "IMP and IMP-C levels whose tickets get the controls (reinit, random mask; every level keeps its "
            "rewind retraining); [] = every pruned level")

    def __post_init__(self) -> None:
        if any(level < 1 for level in self.imp_levels):
            raise UserError(f"controls.imp_levels: {self.imp_levels} must name pruned levels (1 or more)")
        if len(set(self.imp_levels)) != len(self.imp_levels):
            raise UserError("controls.imp_levels must not repeat a value")

    def check_against(self, params: Params) -> None:
        check_listed("controls.networks", self.networks, params.sweep.networks, "sweep.networks")
        beyond = [level for level in self.imp_levels if level > params.imp.levels]
        if beyond:
            raise UserError(f"controls.imp_levels has {beyond}, beyond imp.levels={params.imp.levels}: name levels "
                            f"that exist (e.g. controls.imp_levels=[{params.imp.levels}]) or [] for every level")

    def controls_level(self, level: int) -> bool:
        """Whether IMP's ticket at `level` (a pruned level) gets the controls."""
        return not self.imp_levels or level in self.imp_levels


#: Its sections of params.yaml (cs_repro.params collects them through the method registry).
PARAMS = {"controls": ControlParams}


class TicketRetrain(Hooks):
    """Retrain `masks` from `start_state` (the rewind point), or from the model's own fresh init if None."""

    def __init__(self, masks: dict[str, Tensor], start_state: dict[str, Tensor] | None, mask_scale: float = 1.0,
                 label: str = "retrain") -> None:
        self.masks = masks
        self.start_state = start_state
        self.mask_scale = mask_scale
        self.label = label
        self._hard: HardMasks | None = None
        self._remaining = sparsity_of(masks)

    def begin_phase(self, loop: TrainingLoop, phase: int) -> None:
        if self.start_state is not None:
            loop.model.load_state_dict(self.start_state)
        self._hard = HardMasks.apply(loop.model, self.masks, scale=self.mask_scale)

    def must_learn(self, phase: int) -> bool:
        return False  # a ticket (or a control) that cannot train at its sparsity is a result

    def make_optimizers(self, loop: TrainingLoop, phase: int) -> list[torch.optim.Optimizer]:
        optimizers = super().make_optimizers(loop, phase)
        # HardMasks realises a scale through the gradient, which equals training W only for (momentum) SGD
        # with coupled weight decay: refuse anything else rather than silently train another procedure.
        if self.mask_scale != 1.0 and not all(type(o) is torch.optim.SGD for o in optimizers):
            raise UserError(f"{self.label}: mask_scale {self.mask_scale:g} needs plain SGD optimisers, got "
                            f"{', '.join(type(o).__name__ for o in optimizers)}")
        return optimizers

    def resume(self, loop: TrainingLoop) -> None:
        # Weights in the checkpoint are already masked and scaled: only the gradient hooks are re-registered.
        self._hard = HardMasks.apply(loop.model, self.masks, scale=self.mask_scale, weights_scaled=True)

    def end_epoch(self, loop: TrainingLoop, phase: int, epoch: int) -> dict[str, Any]:
        return {"remaining_weights": self._remaining.remaining_weights, "sparsity": self._remaining.sparsity}


# --- retraining as a stage runs it: the one list of variants ------------------------------------

REINIT_SEED_OFFSET = 100_003  # the reinit control draws weights unrelated to the ticket's own init
# The one list of ways to retrain a ticket: from the rewind point with its own mask scale; from fresh weights
# (reinit control); a random mask with the ticket's layer-wise counts from the rewind point (random control,
# when controls.random); from the rewind point with the released code's scale binary / sigmoid(s0)
# (CS tickets only).
RETRAIN_VARIANTS = ("rewind", "reinit", "random", "rewind_binary_mask", "rewind_released_scale", "rewind_folded_scale")
#: The definitions of a CS ticket (docs/method.md, "What a CS ticket is"): variant -> (its cs.mask_scale name, the
#: suffix of its results method when it runs next to the ticket: cs_binary_mask, cs_released_scale, cs_folded_scale).
CS_TICKET_DEFINITIONS = {"rewind_binary_mask": ("binary", "_binary_mask"),
                         "rewind_released_scale": ("released", "_released_scale"),
                         "rewind_folded_scale": ("folded", "_folded_scale")}
#: The variants that are controls: one that diverges is a finding about the ticket (e.g. the released mask scale
#: on a BN-free network at the profile's lr), recorded as such while the stage goes on. The ticket's own
#: retraining from the rewind point is the main result and still stops its stage when it diverges.
CONTROL_VARIANTS = ("reinit", "random", *CS_TICKET_DEFINITIONS)


def folded(state: dict[str, Tensor], masks: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """A rewound state with every masked tensor multiplied by ``scale`` (the other tensors as they are)."""
    if scale == 1.0:
        return state
    return {name: (value * scale if name in masks else value) for name, value in state.items()}


def train_or_record_divergence(training: TrainingRun, run: RunSpec, hooks: Hooks, variant: str, out_dir: Path,
                               extra: dict[str, Any]) -> list | None:
    """Train a retraining run; a control that diverges is written as a diverged result (None returned)."""
    try:
        return training.train(run, hooks)
    except TrainingDiverged as error:
        if variant not in CONTROL_VARIANTS:
            raise
        log.warning("%s: the %s control diverged at epoch %d (%s); recorded as a result, the stage goes on",
                    run.setting, variant, error.epoch, error.reason)
        training.finish_diverged(out_dir, error, {**extra, "variant": variant, "result_rows": []})
        return None


def retrain_ticket(params: Params, ticket_path: Path, variants, out_dir: Path, device: torch.device,
                   checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> list[str]:
    """Retrain one ticket in each of `variants` (RETRAIN_VARIANTS), into out/<variant>/. The random control
    is left out while controls.random is false. Returns the variants that ran."""
    unknown = [v for v in variants if v not in RETRAIN_VARIANTS]
    if unknown:
        raise UserError(f"variant {unknown[0]!r} is not allowed; choose from {', '.join(RETRAIN_VARIANTS)}")
    ran = []
    for variant in variants:
        if variant == "random" and not params.controls.random:
            log.info("random-mask control of %s skipped: controls.random is false", ticket_path)
            continue
        timing = Path(timing_dir) / variant if timing_dir else None
        if variant == "random":
            run_random_control(params, ticket_path, Path(out_dir) / variant, device, checkpoint_dir, timing)
        else:
            run_retrain(params, ticket_path, variant, Path(out_dir) / variant, device, checkpoint_dir, timing)
        ran.append(variant)
    return ran


def chosen_variants(params: Params, variants: str) -> tuple[list[str], set[str]]:
    """The variants a `--variants` value names, in order: a comma list of RETRAIN_VARIANTS and the keywords
    'controls' (rewind plus the controls params.yaml enables: reinit, released scale) and 'control-only'
    (those controls alone), e.g. 'control-only,random'. Also returns the variants a keyword brought in."""
    enabled = ["reinit"] if params.controls.reinit else []
    for variant, switched_on in (("rewind_binary_mask", params.controls.binary_mask),
                                 ("rewind_released_scale", params.controls.released_scale),
                                 ("rewind_folded_scale", params.controls.folded_scale)):
        if switched_on and CS_TICKET_DEFINITIONS[variant][0] != params.cs.mask_scale:
            enabled.append(variant)
    chosen: list[str] = []
    from_keyword: set[str] = set()
    for item in (text.strip() for text in variants.split(",") if text.strip()):
        if item in ("controls", "control-only"):
            named = (["rewind"] if item == "controls" else []) + enabled
            from_keyword.update(enabled)
        elif item in RETRAIN_VARIANTS:
            named = [item]
        else:
            raise UserError(f"--variants: {item!r} is not allowed; use {', '.join(RETRAIN_VARIANTS)}, "
                            "controls or control-only")
        chosen += [variant for variant in named if variant not in chosen]
    return chosen, from_keyword


def retrain_tickets(params: Params, tickets: Path, variants: str, out_dir: Path, device: torch.device,
                    checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> None:
    """Retrain a ticket file into out/<variant>/, or every ticket of a folder into out/<ticket>/<variant>/,
    whatever method found them. A level ticket (IMP, IMP-C) gets its controls only at the levels
    controls.imp_levels names. A stage with nothing to run writes skipped.json markers instead."""
    chosen, from_keyword = chosen_variants(params, variants)
    tickets, out_dir = Path(tickets), Path(out_dir)
    if not tickets.exists():
        raise UserError(f"{tickets} does not exist: run the search that writes it first")
    files = sorted(tickets.glob("*.pt")) if tickets.is_dir() else [tickets]
    if not files:
        raise UserError(f"no ticket files (*.pt) in {tickets}")
    runs = []
    for path in files:
        metadata = load_ticket(path).metadata
        if tickets.is_dir() and metadata.get("remaining_weights", 0.0) >= 1.0:
            continue  # the dense 'ticket' (IMP level 0) has nothing to control for
        # the released scale the controls enable is CS's; other tickets (IMP) have no s0
        wanted = [v for v in chosen if not (v in CS_TICKET_DEFINITIONS and v in from_keyword and "s0" not in metadata)]
        level = metadata.get("level")
        if isinstance(level, int) and not params.controls.controls_level(level):
            wanted = [v for v in wanted if v == "rewind"]  # an IMP level without controls: its ticket only
        if wanted:
            runs.append((path, wanted, Path(path.stem) if tickets.is_dir() else Path()))
    if not runs:  # a stage's outputs must exist even when there is nothing to run
        write_skipped("no control applies (controls.reinit, controls.binary_mask, controls.released_scale, "
                      "controls.folded_scale, controls.imp_levels)",
                      out_dir, timing_dir)
        return
    ran = [retrain_ticket(params, path, wanted, out_dir / relative, device, checkpoint_dir,
                          Path(timing_dir) / relative if timing_dir else None)
           for path, wanted, relative in runs]
    if not any(ran):  # retrain_ticket leaves the random control out while controls.random is false
        write_skipped("no control applies (controls.random is false)", out_dir, timing_dir)


def run_random_control(params: Params, ticket_path: Path, out_dir: Path, device: torch.device,
                       checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> dict[str, Any]:
    """Random masks with exactly the ticket's layer-wise counts, retrained from the ticket's rewind point."""
    ticket = load_ticket(ticket_path)
    meta = ticket.metadata
    network, seed = ticket_network(params, ticket, ticket_path)
    masks = random_masks_like(ticket.masks, random_generator(seed))
    # the random mask starts from the ticket's own starting weights (folded, where the ticket definition folds)
    start = folded(ticket.rewind_state, ticket.masks, float(meta.get("weight_scale", 1.0)))
    control = Ticket(masks, start, {**meta, "weight_scale": 1.0, "control": "random",
                                    "source_ticket": str(ticket_path)}).with_counts()
    control_path = Path(out_dir) / "ticket.pt"
    save_ticket(control, control_path)
    run = RunSpec("control_random", network, seed, f"{meta['method']} {meta['setting']}", {
        "ticket": ticket_digest(ticket_path), "variant": "random", "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir)
    check_ticket_fits(ticket, ticket_path, training.model, training.prunable)
    hooks = TicketRetrain({k: v.to(device) for k, v in masks.items()}, start,
                          float(meta.get("mask_scale", 1.0)), label=run.method)
    history = train_or_record_divergence(training, run, hooks, "random", out_dir, {
        "ticket": {k: v for k, v in meta.items() if k != "params"}, "ticket_file": str(ticket_path)})
    if history is None:
        return {}
    epochs = training.net.epochs
    row = run_row(method=meta["method"], variant="random", track="ticket", seed=seed, setting=meta["setting"],
                  ticket_metadata=control.metadata, test_accuracy=history[-1].test_accuracy,
                  val_accuracy=history[-1].val_accuracy, search_epochs=meta["search_epochs"], retrain_epochs=epochs,
                  ticket_file=control_path, run_dir=out_dir, searched_ticket=ticket_path)
    final = final_metrics(history, remaining_weights=control.metadata["remaining_weights"],
                   layer_remaining=control.metadata["layer_remaining"], retrain_epochs=epochs)
    training.finish(out_dir, final, {"result_rows": [row], "ticket": {k: v for k, v in meta.items() if k != "params"},
                                     "ticket_file": str(ticket_path), "variant": "random"})
    return final


def run_retrain(params: Params, ticket_path: Path, variant: str, out_dir: Path, device: torch.device,
                checkpoint_dir: Path | None = CHECKPOINT_DIR, timing_dir: Path | None = None) -> dict[str, Any]:
    """Retrain one ticket's own mask: variant 'rewind' (from the rewind point), 'reinit' (fresh random weights),
    or one of CS's ticket definitions: 'rewind_binary_mask' (the paper's mask x rewound weights),
    'rewind_released_scale' (mask x 1/sigmoid(s0) in every forward pass, as the released CS code) or
    'rewind_folded_scale' (the rewound weights x 1/sigmoid(s0) once, then a plain mask)."""
    if variant not in RETRAIN_VARIANTS or variant == "random":
        raise UserError(f"variant {variant!r} is not allowed; choose one of {', '.join(RETRAIN_VARIANTS)}")
    ticket = load_ticket(ticket_path)
    meta = ticket.metadata
    network, seed = ticket_network(params, ticket, ticket_path)
    mask_scale = float(meta.get("mask_scale", 1.0))
    weight_scale = float(meta.get("weight_scale", 1.0))
    if variant in CS_TICKET_DEFINITIONS:
        if "s0" not in meta:
            raise UserError(f"{ticket_path}: variant {variant} needs a CS ticket (one with an s0)")
        rule = CS_TICKET_DEFINITIONS[variant][0]
        mask_scale, weight_scale = mask_scale_for(rule, float(meta["s0"])), weight_scale_for(rule, float(meta["s0"]))
    run = RunSpec(f"retrain_{variant}", network, seed, f"{meta['method']} {meta['setting']}", {
        "ticket": ticket_digest(ticket_path), "variant": variant, "network": network_config(params, network)})
    training = TrainingRun(params, network, seed, device, checkpoint_dir, timing_dir,
                           model_seed=seed + REINIT_SEED_OFFSET if variant == "reinit" else seed)
    check_ticket_fits(ticket, ticket_path, training.model, training.prunable)
    start_state = None if variant == "reinit" else folded(ticket.rewind_state, ticket.masks, weight_scale)
    masks = {k: v.to(device) for k, v in ticket.masks.items()}
    hooks = TicketRetrain(masks, start_state, mask_scale, label=run.method)
    history = train_or_record_divergence(training, run, hooks, variant, out_dir, {
        "ticket": {k: v for k, v in meta.items() if k != "params"}, "ticket_file": str(ticket_path),
        "mask_scale": mask_scale, "weight_scale": weight_scale})
    if history is None:
        return {}
    final = final_metrics(history, remaining_weights=meta["remaining_weights"], layer_remaining=meta["layer_remaining"],
                   search_epochs=meta["search_epochs"], retrain_epochs=training.net.epochs)
    # Another definition of the ticket (released scale, folded scale) is reported as a method of its own
    # (e.g. cs_released_scale) so that it gets its own line, table row and matching verdict.
    other = variant in CS_TICKET_DEFINITIONS
    rows = [run_row(method=meta["method"] + CS_TICKET_DEFINITIONS[variant][1] if other else meta["method"],
                    variant="rewind" if other else variant, track="ticket", seed=seed, setting=meta["setting"],
                    ticket_metadata=meta, test_accuracy=final["test_accuracy"], val_accuracy=final["val_accuracy"],
                    search_epochs=meta["search_epochs"], retrain_epochs=training.net.epochs, ticket_file=ticket_path,
                    run_dir=out_dir)]
    training.finish(out_dir, final, {"ticket": {k: v for k, v in meta.items() if k != "params"},
                                     "ticket_file": str(ticket_path), "variant": variant, "mask_scale": mask_scale,
                                     "weight_scale": weight_scale, "result_rows": rows})
    return final

