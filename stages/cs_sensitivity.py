"""Stage `cs_sensitivity@<network>-<setting>-<seed>`: a CS search with one hyperparameter changed, and its
ticket's rewind retraining."""

from typing import Annotated

import typer

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def cs_sensitivity(
    network: NetworkOption,
    setting: Annotated[str, typer.Option(help="name=value, name one of beta_final, lambda, weight_decay")],
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """CS search at sensitivity.s0 with the one value changed (out/search), then its ticket retrained from the
    rewind point with the profile's own settings (out/retrain/rewind)."""
    from cs_repro.methods.cs_sensitivity import run_cs_sensitivity

    p = load(params)
    run_cs_sensitivity(p, network, setting, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(cs_sensitivity)
