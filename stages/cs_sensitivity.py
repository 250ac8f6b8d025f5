"""Stage `cs_sensitivity@<network>-<setting>-<seed>`: a CS search with one hyperparameter changed, and its
ticket's rewind retraining."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def cs_sensitivity(network: NetworkOption,
                   setting: Annotated[str, typer.Option(help="name=value, name one of beta_final, lambda, weight_decay")],
                   seed: SeedOption, out: OutOption, training: Training) -> None:
    """CS search at sensitivity.s0 with the one value changed (out/search), then its ticket retrained from the
    rewind point with the profile's own settings (out/retrain/rewind)."""
    from cs_repro.methods.cs_sensitivity import run_cs_sensitivity

    run_cs_sensitivity(training.params, network, setting, seed, out, training.device, training.checkpoint_dir,
                       training.timing)


if __name__ == "__main__":
    run_training_stage(cs_sensitivity)
