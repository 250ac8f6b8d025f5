"""Stage `imp_random_control@<network>-<seed>`: random masks with each IMP level's layer-wise counts."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, OutOption,
                                ParamsOption, TimingOption, load, run_stage, training_device)


def imp_random_control(
    tickets: Annotated[Path, typer.Option(help="an IMP search's tickets/ directory (level_XX.pt)")],
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Random masks with each IMP level ticket's layer-wise counts, retrained from its rewind point
    (out/level_XX/), for the levels random_control.imp_levels names ([] = every pruned level)."""
    from cs_repro.methods.retrain import run_level_random_controls

    p = load(params)
    run_level_random_controls(p, tickets, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(imp_random_control)
