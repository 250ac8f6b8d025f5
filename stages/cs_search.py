"""Stage `cs_search@<network>-<s0>-<seed>`: one Continuous Sparsification ticket search."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def cs_search(network: NetworkOption, s0: Annotated[float, typer.Option(help="initial mask logit (lower -> sparser ticket)")],
              seed: SeedOption, out: OutOption, training: Training) -> None:
    """Continuous Sparsification ticket search for one (network, s0, seed): ticket.pt, metrics.json."""
    from cs_repro.methods.cs import run_cs_search

    run_cs_search(training.params, network, s0, seed, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(cs_search)
