"""Stage `slimming_train@<network>-<seed>`: network slimming's training with L1 on the BatchNorm scales."""

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def slimming_train(
    network: NetworkOption,
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Train with slimming.penalty * sum |gamma| on the prunable channels (trained.pt); a network without
    such channels (no BatchNorm) writes skipped.json."""
    from cs_repro.methods.slimming import run_slimming_train

    p = load(params)
    run_slimming_train(p, network, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(slimming_train)
