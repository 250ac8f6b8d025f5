"""Stage `l0_search@<network>-<penalty>-<seed>`: L0 regularisation (hard-concrete gates), one penalty."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def l0_search(network: NetworkOption,
              penalty: Annotated[float, typer.Option(help="L0 lambda: weight of the expected number of open gates")],
              seed: SeedOption, out: OutOption, training: Training) -> None:
    """L0 training: ticket.pt (the deterministic gates' mask) and the gated network's result row."""
    from cs_repro.methods.l0 import run_l0_search

    run_l0_search(training.params, network, penalty, seed, out, training.device, training.checkpoint_dir,
                  training.timing)


if __name__ == "__main__":
    run_training_stage(l0_search)
