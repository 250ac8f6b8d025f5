"""Stage `gmp_cs_layers@…`: GMP to a CS ticket's layer-wise sparsities, and globally to its overall one."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, OutOption,
                                ParamsOption, TimingOption, load, run_stage, training_device)


def gmp_cs_layers(
    cs_ticket: Annotated[Path, typer.Option(help="a CS ticket.pt")],
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Ablation: GMP to a CS ticket's layer-wise sparsities (out/layerwise) and globally to its overall one
    (out/global)."""
    from cs_repro.methods.gmp import run_gmp_cs_layers

    p = load(params)
    run_gmp_cs_layers(p, cs_ticket, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(gmp_cs_layers)
