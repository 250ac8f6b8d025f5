"""Stages `magnitude@<network>-<sparsity>-<seed>` and `magnitude_budget@…`: one-shot magnitude pruning of a dense
network, globally or to a layer budget (uniform, ERK)."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def magnitude(network: NetworkOption, sparsity: Annotated[float, typer.Option(help="target sparsity")],
              seed: SeedOption, dense: Annotated[Path, typer.Option(help="the magnitude_dense stage's output directory")],
              out: OutOption, training: Training,
              budget: Annotated[str, typer.Option(help="layer budget: global (one ranking), uniform or erk")] = "global",
              ) -> None:
    """One-shot magnitude pruning: the rewind ticket (+ random control) and the fine-tuned pruned network."""
    from cs_repro.methods.magnitude import run_magnitude

    run_magnitude(training.params, network, sparsity, seed, dense, out, training.device, training.checkpoint_dir,
                  training.timing, budget)


if __name__ == "__main__":
    run_training_stage(magnitude)
