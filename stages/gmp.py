"""Stage `gmp@<network>-<sparsity>-<seed>`: gradual magnitude pruning (Zhu & Gupta) to one sparsity."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def gmp(
    network: NetworkOption,
    sparsity: Annotated[float, typer.Option(help="target sparsity s_f")],
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Gradual magnitude pruning to one target sparsity: pruned.pt and its result row."""
    from cs_repro.methods.gmp import run_gmp

    p = load(params)
    run_gmp(p, network, sparsity, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(gmp)
