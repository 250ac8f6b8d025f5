"""Stages `gmp@<network>-<sparsity>-<seed>` and `gmp_budget@…`: gradual magnitude pruning (Zhu & Gupta) to one
sparsity, with one global ranking or a layer budget (uniform, ERK)."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def gmp(network: NetworkOption, sparsity: Annotated[float, typer.Option(help="target sparsity s_f")], seed: SeedOption,
        out: OutOption, training: Training,
        budget: Annotated[str, typer.Option(help="layer budget: global (one ranking), uniform or erk (method gmp_<budget>)")] = "global",
        ) -> None:
    """Gradual magnitude pruning to one target sparsity: pruned.pt and its result row."""
    from cs_repro.methods.gmp import run_gmp, run_gmp_budget

    where = (out, training.device, training.checkpoint_dir, training.timing)
    if budget == "global":
        run_gmp(training.params, network, sparsity, seed, *where)
    else:
        run_gmp_budget(training.params, network, budget, sparsity, seed, *where)


if __name__ == "__main__":
    run_training_stage(gmp)
