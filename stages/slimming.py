"""Stage `slimming@<network>-<sparsity>-<seed>`: network slimming's channel pruning and fine-tuning."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def slimming(
    network: NetworkOption,
    sparsity: Annotated[float, typer.Option(help="target sparsity of the prunable weights")],
    seed: SeedOption,
    trained: Annotated[Path, typer.Option(help="the slimming_train stage's output directory")],
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Remove channels by |gamma| (smallest first, all layers) to the target sparsity, then fine-tune:
    pruned.pt and finetune/metrics.json with the pruning-track row."""
    from cs_repro.methods.slimming import run_slimming

    p = load(params)
    run_slimming(p, network, sparsity, seed, trained, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(slimming)
