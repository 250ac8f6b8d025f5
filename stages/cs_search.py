"""Stage `cs_search@<network>-<s0>-<seed>`: one Continuous Sparsification ticket search."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def cs_search(
    network: NetworkOption,
    s0: Annotated[float, typer.Option(help="initial mask logit (lower -> sparser ticket)")],
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Continuous Sparsification ticket search for one (network, s0, seed): ticket.pt, metrics.json."""
    from cs_repro.methods.cs import run_cs_search

    p = load(params)
    run_cs_search(p, network, s0, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(cs_search)
