"""Ticket-search and pruning methods, one file each, all running through `cs_repro.train.TrainingLoop`.

A method's module holds its `Hooks` subclass (what it does to the training) and the `run_*` functions a
stage calls (set-up through `cs_repro.run.TrainingRun`, its tickets, its result rows). Retraining any
ticket, whatever found it, is `retrain.py`'s, with one list of variants.

`METHODS` maps every method name that result rows carry to its entry: the module that implements it,
the name and colour the report shows it with, and whether it is an ablation (drawn only on request,
left out of the headline metrics). The report reads names, colours and ablations from here only; this
file stays free of torch so that the report can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cs_repro.methods.budgets import LAYER_BUDGETS
from cs_repro.registry import Registry


@dataclass(frozen=True)
class MethodEntry:
    module: str  # where it is implemented
    label: str  # its name in figures, tables and REPORT.md
    color: str  # its one colour in every figure (none shared)
    ablation: bool = False  # a variant of another method that answers one question (report: ## Ablations)
    # Where its settings come from, so that the report can say which values would fill a gap between two of
    # its tickets (report/coverage.py): the params key holding them, the name its result rows give a setting
    # ("s0" in "s0=0.005") and how a setting maps to remaining weights: "linear" or "log" (interpolated in
    # log(remaining weights)), "sparsity" (a target: remaining = 1 - value), "levels" (the key holds the last
    # level, each level keeps a fixed fraction). None: no setting to suggest.
    settings_key: str | None = None
    setting_name: str = ""
    setting_scale: str = "linear"


METHODS: Registry[MethodEntry] = Registry("method")
_TARGETS = {"settings_key": "baselines.sparsities", "setting_name": "sparsity", "setting_scale": "sparsity"}
_ABLATION_S0 = {"settings_key": "ablations.s0", "setting_name": "s0"}
for _name, _entry in {
    "dense": MethodEntry("cs_repro.methods.imp", "Dense", "#333333"),  # IMP's level 0
    "cs": MethodEntry("cs_repro.methods.cs", "CS", "#d62728", settings_key="sweep.s0", setting_name="s0"),
    "imp": MethodEntry("cs_repro.methods.imp", "IMP", "#1f77b4", settings_key="imp.levels", setting_name="level",
                       setting_scale="levels"),
    "imp_c": MethodEntry("cs_repro.methods.imp", "IMP-C", "#17becf", settings_key="imp_c.levels",
                         setting_name="level", setting_scale="levels"),
    # The reviewers' baselines.
    "l0": MethodEntry("cs_repro.methods.l0", "L0 (hard concrete)", "#2ca02c", settings_key="l0.penalties",
                      setting_name="penalty", setting_scale="log"),
    "gmp": MethodEntry("cs_repro.methods.gmp", "GMP", "#9467bd", **_TARGETS),
    "magnitude_rewind": MethodEntry("cs_repro.methods.magnitude", "Magnitude + rewind", "#8c564b", **_TARGETS),
    "magnitude_finetune": MethodEntry("cs_repro.methods.magnitude", "Magnitude + fine-tune", "#e377c2", **_TARGETS),
    "slimming": MethodEntry("cs_repro.methods.slimming", "Network slimming", "#637939"),
    # The ablations.
    "cs_beta1": MethodEntry("cs_repro.methods.cs_ablations", "CS, beta = 1 + threshold", "#ff7f0e", ablation=True,
                            **_ABLATION_S0),
    "cs_released_clamp": MethodEntry("cs_repro.methods.cs_ablations", "CS, released clamp rule", "#bcbd22",
                                     ablation=True, **_ABLATION_S0),
    "gmp_cs_layers": MethodEntry("cs_repro.methods.gmp", "GMP (CS layer-wise targets)", "#393b79", ablation=True),
    # CS's tickets retrained under another definition of a ticket (methods/retrain.py): on CS's own s0 grid
    "cs_binary_mask": MethodEntry("cs_repro.methods.retrain", "CS, binary mask", "#e7ba52", ablation=True,
                                  settings_key="sweep.s0", setting_name="s0"),
    "cs_released_scale": MethodEntry("cs_repro.methods.retrain", "CS, released mask scale", "#843c39", ablation=True,
                                     settings_key="sweep.s0", setting_name="s0"),
    "cs_folded_scale": MethodEntry("cs_repro.methods.retrain", "CS, folded mask scale", "#ad494a", ablation=True,
                                   settings_key="sweep.s0", setting_name="s0"),
    # CS with one hyperparameter changed (its sensitivity sweep).
    "cs_sensitivity": MethodEntry("cs_repro.methods.cs_sensitivity", "CS, one hyperparameter changed", "#e7969c",
                                  ablation=True),
}.items():
    METHODS.register(_name)(_entry)
# The pruning baselines with a per-layer budget (cs_repro.methods.budgets) instead of one global ranking.
for _base, _label, _colors in (("gmp", "GMP", ("#c5b0d5", "#6b3d9a")),
                               ("magnitude_rewind", "Magnitude + rewind", ("#c49c94", "#5c3a2e")),
                               ("magnitude_finetune", "Magnitude + fine-tune", ("#f7b6d2", "#a6476f"))):
    for (_budget, _budget_label), _color in zip(LAYER_BUDGETS.items(), _colors, strict=True):
        METHODS.register(f"{_base}_{_budget}")(MethodEntry(METHODS.get(_base).module, f"{_label} ({_budget_label})",
                                                           _color, ablation=True, **_TARGETS))

#: Methods that are ablations of another (see MethodEntry.ablation).
ABLATION_METHODS = frozenset(name for name in METHODS if METHODS.get(name).ablation)
