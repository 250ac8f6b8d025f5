"""Stage `cs_ablation@<name>-<network>-<s0>-<seed>`: a CS variant's search and its ticket's retraining."""

from typing import Annotated

import typer

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def cs_ablation(name: Annotated[str, typer.Argument(help="cs_beta1 or cs_released_clamp")], network: NetworkOption,
                s0: Annotated[float, typer.Option(help="initial mask logit")], seed: SeedOption, out: OutOption,
                training: Training) -> None:
    """CS ablation search (out/search) and its ticket's rewind retraining (out/retrain/rewind)."""
    from cs_repro.methods.cs_ablations import run_cs_ablation

    run_cs_ablation(training.params, name, network, s0, seed, out, training.device, training.checkpoint_dir,
                    training.timing)


if __name__ == "__main__":
    run_training_stage(cs_ablation)
