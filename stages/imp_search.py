"""Stages `imp_search@<network>-<seed>` and, with --continue, `imp_c_search@…`: an IMP ticket search."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def imp_search(
    network: NetworkOption,
    seed: SeedOption,
    out: OutOption,
    continue_search: Annotated[bool, typer.Option("--continue", help="IMP-C: do not rewind between levels")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Iterative magnitude pruning with rewinding (IMP), or IMP-C with --continue: tickets/level_XX.pt.
    Level l's training is the retraining of ticket l."""
    from cs_repro.methods.imp import run_imp

    p = load(params)
    run_imp(p, network, seed, out, training_device(p, device), continue_search, checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(imp_search)
