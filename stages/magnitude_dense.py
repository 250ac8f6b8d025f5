"""Stage `magnitude_dense@<network>-<seed>`: the dense network one-shot magnitude pruning starts from."""

from cs_repro.stage_cli import (DEFAULT_CHECKPOINTS, DEFAULT_PARAMS, CheckpointOption, DeviceOption, NetworkOption,
                                OutOption, ParamsOption, SeedOption, TimingOption, load, run_stage, training_device)


def magnitude_dense(
    network: NetworkOption,
    seed: SeedOption,
    out: OutOption,
    params: ParamsOption = DEFAULT_PARAMS,
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Train the dense network that one-shot magnitude pruning starts from (dense.pt: final + rewind weights)."""
    from cs_repro.methods.magnitude import run_magnitude_dense

    p = load(params)
    run_magnitude_dense(p, network, seed, out, training_device(p, device), checkpoint_dir, timing)


if __name__ == "__main__":
    run_stage(magnitude_dense)
