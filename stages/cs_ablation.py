"""Stage `cs_ablation@<name>-<network>-<s0>-<seed>`: a CS variant's search and its ticket's retraining."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def cs_ablation(
    name: Annotated[str, typer.Argument(help="cs_beta1 or cs_released_clamp")],
    network: NetworkOption,
    s0: Annotated[float, typer.Option(help="initial mask logit")],
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """CS ablation search (out/search) and its ticket's rewind retraining (out/retrain/rewind)."""
    from cs_repro.methods.cs_ablations import run_cs_ablation

    p = load(params)
    run_cs_ablation(p, name, network, s0, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(cs_ablation)
