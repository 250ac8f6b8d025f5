"""Stages `magnitude@<network>-<sparsity>-<seed>` and `magnitude_budget@…`: one-shot magnitude pruning of a dense
network, globally or to a layer budget (uniform, ERK)."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def magnitude(
    network: NetworkOption,
    sparsity: Annotated[float, typer.Option(help="target sparsity")],
    seed: SeedOption,
    dense: Annotated[Path, typer.Option(help="the magnitude_dense stage's output directory")],
    out: OutOption,
    budget: Annotated[str, typer.Option(help="layer budget: global (one ranking), uniform or erk")] = "global",
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """One-shot global magnitude pruning: the rewind ticket (+ random control) and the fine-tuned pruned network."""
    from cs_repro.methods.magnitude import run_magnitude

    p = load(params)
    run_magnitude(p, network, sparsity, seed, dense, out, training_device(p, device), checkpoint_dir, timing, budget)


if __name__ == "__main__":
    run_stage(magnitude)
