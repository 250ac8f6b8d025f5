"""Stages `imp_search@<network>-<seed>` and, with --continue, `imp_c_search@…`: an IMP ticket search."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def imp_search(network: NetworkOption, seed: SeedOption, out: OutOption, training: Training,
               continue_search: Annotated[bool, typer.Option("--continue", help="IMP-C: do not rewind between levels")] = False,
               ) -> None:
    """Iterative magnitude pruning with rewinding (IMP), or IMP-C with --continue: tickets/level_XX.pt.
    Level l's training is the retraining of ticket l."""
    from cs_repro.methods.imp import run_imp

    run_imp(training.params, network, seed, out, training.device, continue_search, training.checkpoint_dir,
            training.timing)


if __name__ == "__main__":
    run_training_stage(imp_search)
