"""Stage `slimming_train@<network>-<seed>`: network slimming's training with L1 on the BatchNorm scales."""

from cs_repro.stage_cli import NetworkOption, OutOption, SeedOption, Training, run_training_stage


def slimming_train(network: NetworkOption, seed: SeedOption, out: OutOption, training: Training) -> None:
    """Train with slimming.penalty * sum |gamma| on the prunable channels (trained.pt); a network without
    such channels (no BatchNorm) writes skipped.json."""
    from cs_repro.methods.slimming import run_slimming_train

    run_slimming_train(training.params, network, seed, out, training.device, training.checkpoint_dir, training.timing)


if __name__ == "__main__":
    run_training_stage(slimming_train)
