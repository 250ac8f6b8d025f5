"""Stage `l0_search@<network>-<penalty>-<seed>`: L0 regularisation (hard-concrete gates), one penalty."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def l0_search(
    network: NetworkOption,
    penalty: Annotated[float, typer.Option(help="L0 lambda: weight of the expected number of open gates")],
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """L0 training: ticket.pt (the deterministic gates' mask) and the gated network's result row."""
    from cs_repro.methods.l0 import run_l0_search

    p = load(params)
    run_l0_search(p, network, penalty, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(l0_search)
