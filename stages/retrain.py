"""Stages `cs_retrain`, `imp_controls`, `l0_retrain`, …: retrain tickets, whatever method found them."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import Training, run_training_stage


def retrain(
    tickets: Annotated[Path, typer.Option(help="a ticket file, or a directory of ticket files (*.pt)")],
    out: Annotated[Path, typer.Option(help="output directory: <variant>/ (one ticket) or <ticket>/<variant>/")],
    training: Training,
    variants: Annotated[str, typer.Option(help="comma list of rewind, reinit, random, rewind_released_scale and the keywords 'controls' (rewind plus the controls params.yaml enables) and 'control-only' (those controls alone), e.g. control-only,random")] = "controls",
) -> None:
    """Retrain tickets from their rewind point ('rewind'), from fresh weights ('reinit' control), as a random
    mask with the same layer-wise counts ('random' control, when controls.random), or with the
    released code's mask scale ('rewind_released_scale', CS tickets)."""
    from cs_repro.methods.retrain import retrain_tickets

    retrain_tickets(training.params, tickets, variants, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(retrain)
