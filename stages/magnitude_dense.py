"""Stage `magnitude_dense@<network>-<seed>`: the dense network one-shot magnitude pruning starts from."""

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def magnitude_dense(network: NetworkOption, seed: SeedOption, out: OutOption, training: Training) -> None:
    """Train the dense network that one-shot magnitude pruning starts from (dense.pt: final + rewind weights)."""
    from cs_repro.methods.magnitude import run_magnitude_dense

    run_magnitude_dense(training.params, network, seed, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(magnitude_dense)
