"""Stage `gmp_cs_layers@…`: GMP to a CS ticket's layer-wise sparsities, and globally to its overall one."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import OutOption, Training, run_training_stage


def gmp_cs_layers(cs_ticket: Annotated[Path, typer.Option(help="a CS ticket.pt")], out: OutOption,
                  training: Training) -> None:
    """Ablation: GMP to a CS ticket's layer-wise sparsities (out/layerwise) and globally to its overall one
    (out/global)."""
    from cs_repro.methods.gmp import run_gmp_cs_layers

    run_gmp_cs_layers(training.params, cs_ticket, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(gmp_cs_layers)
