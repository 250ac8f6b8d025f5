"""Stage `imp_random_control@<network>-<seed>`: random masks with each IMP level's layer-wise counts."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import OutOption, Training, run_training_stage


def imp_random_control(tickets: Annotated[Path, typer.Option(help="an IMP search's tickets/ directory (level_XX.pt)")],
                       out: OutOption, training: Training) -> None:
    """Random masks with each IMP level ticket's layer-wise counts, retrained from its rewind point
    (out/level_XX/), for the levels controls.imp_levels names ([] = every pruned level)."""
    from cs_repro.methods.retrain import run_level_random_controls

    run_level_random_controls(training.params, tickets, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(imp_random_control)
