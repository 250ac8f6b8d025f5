"""Ticket-search and pruning methods, one file each, all running through `cs_repro.train.TrainingLoop`.

A method's module holds its `Hooks` subclass (what it does to the training) and the `run_*` functions a
stage calls (set-up through `cs_repro.run.TrainingRun`, its tickets, its result rows); `METHODS` maps
the names used in params.yaml, metrics and figures to that module. Retraining any ticket, whatever found
it, is `retrain.py`'s, with one list of variants.
"""

from cs_repro.registry import Registry

METHODS: Registry[str] = Registry("method")
for _name, _module in {
    "cs": "cs_repro.methods.cs",
    "imp": "cs_repro.methods.imp",
    "imp_c": "cs_repro.methods.imp",
    "retrain": "cs_repro.methods.retrain",
    # The reviewers' baselines and ablations.
    "l0": "cs_repro.methods.l0",
    "gmp": "cs_repro.methods.gmp",
    "gmp_cs_layers": "cs_repro.methods.gmp",
    "magnitude_rewind": "cs_repro.methods.magnitude",
    "magnitude_finetune": "cs_repro.methods.magnitude",
    "random": "cs_repro.methods.random_masks",
    "cs_beta1": "cs_repro.methods.cs_ablations",
    "cs_released_clamp": "cs_repro.methods.cs_ablations",
}.items():
    METHODS.register(_name)(_module)
