"""Stages `gmp@<network>-<sparsity>-<seed>` and `gmp_budget@…`: gradual magnitude pruning (Zhu & Gupta) to one
sparsity, with one global ranking or a layer budget (uniform, ERK)."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def gmp(
    network: NetworkOption,
    sparsity: Annotated[float, typer.Option(help="target sparsity s_f")],
    seed: SeedOption,
    out: OutOption,
    budget: Annotated[str, typer.Option(help="layer budget: global (one ranking), uniform or erk (method gmp_<budget>)")] = "global",
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Gradual magnitude pruning to one target sparsity: pruned.pt and its result row."""
    from cs_repro.methods.gmp import run_gmp, run_gmp_budget

    p = load(params)
    if budget == "global":
        run_gmp(p, network, sparsity, seed, out, training_device(p, device), checkpoint_dir, timing)
    else:
        run_gmp_budget(p, network, budget, sparsity, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(gmp)
