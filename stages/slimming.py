"""Stage `slimming@<network>-<sparsity>-<seed>`: network slimming's channel pruning and fine-tuning."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def slimming(network: NetworkOption,
             sparsity: Annotated[float, typer.Option(help="target sparsity of the prunable weights")], seed: SeedOption,
             trained: Annotated[Path, typer.Option(help="the slimming_train stage's output directory")], out: OutOption,
             training: Training) -> None:
    """Remove channels by |gamma| (smallest first, all layers) to the target sparsity, then fine-tune:
    pruned.pt and finetune/metrics.json with the pruning-track row."""
    from cs_repro.methods.slimming import run_slimming

    run_slimming(training.params, network, sparsity, seed, trained, out, training.device, training.checkpoint_dir,
                 training.timing)


if __name__ == "__main__":
    run_training_stage(slimming)
