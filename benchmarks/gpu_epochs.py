"""Seconds per epoch of the paper profile's networks, through the real run functions.

First prints the ops dispatched per training step (dense, fixed mask, CS, L0; benchmarks/op_counts.py),
which is all it prints without CUDA. On a GPU it then writes CIFAR-10-format files of the real size (50k
training, 10k test images; random content, so the accuracies printed mean nothing) and times the first
epochs of a dense run (IMP level 0) and of a CS search for ResNet-20 and VGG-16, in fp32 and with bf16
autocast. Each run writes its resume checkpoints as a stage does; timing.json records every write next to
the epoch times (which include them), so the checkpoint's share of an epoch can be read off:

    PYTHONPATH=src:tests python benchmarks/gpu_epochs.py --epochs 3 --out /tmp/gpu.json

`--smoke` runs the same code on tiny files and two batches per epoch, on the CPU as well: a check that the
script works before GPU time is spent on it (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run (first one is warm-up)")
    parser.add_argument("--networks", default="resnet20,vgg16")
    parser.add_argument("--out", type=Path, default=None, help="write the measurements as JSON here")
    parser.add_argument("--smoke", action="store_true", help="tiny files, 2 batches per epoch, CPU allowed")
    args = parser.parse_args()

    # Ops dispatched per training step (benchmarks/op_counts.py): what a GPU step launches, countable anywhere.
    sys.path.insert(0, str(REPO / "benchmarks"))
    from op_counts import ops_per_step

    op_lines = {}
    for network in args.networks.split(","):
        totals = {variant: sum(ops_per_step(network, variant).values()) for variant in ("dense", "fixed", "cs", "l0")}
        op_lines[network] = totals
        print(f"{network} cs/dense ops per step: {totals['cs'] / totals['dense']:.2f}  "
              f"(dense {totals['dense']}, fixed mask {totals['fixed']}, CS {totals['cs']}, L0 {totals['l0']}; "
              "GPU mask path)", flush=True)
    if not torch.cuda.is_available() and not args.smoke:
        return  # the epoch timings need a GPU

    from fixtures import write_cifar10

    from cs_repro.data.prepared import prepare_dataset, prepared_path
    from cs_repro.methods.cs import run_cs_search
    from cs_repro.methods.imp import run_imp
    from cs_repro.device import choose_device, hardware_name
    from cs_repro.params import params_from_dict
    from cs_repro.profiles import load_profile

    device = choose_device()
    workdir = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    root = write_cifar10(workdir / "cifar", n_per_batch=20 if args.smoke else 10_000, n_test=20 if args.smoke else 10_000)
    print(f"wrote CIFAR-format files in {time.perf_counter() - started:.1f}s", flush=True)

    raw = load_profile("paper", REPO / "conf")
    raw["data"].update(root=str(root), download=False, verify_checksums=False)
    raw["cs"]["rounds"] = 1
    raw["imp"]["levels"] = 1
    for net in raw["networks"].values():
        net.update(epochs=args.epochs, lr_milestones=[], rewind_epoch=1)
        if args.smoke:
            net.update(batch_size=8, max_batches=2, val_size=20)
    import os

    os.chdir(workdir)
    prepare_dataset(params_from_dict(raw), "cifar10", prepared_path("cifar10"))

    results = {"hardware": hardware_name(device), "torch": torch.__version__, "epochs": args.epochs, "runs": [],
               "ops_per_step": op_lines}
    for network in args.networks.split(","):
        for bf16 in (False, True):
            variant = copy.deepcopy(raw)
            variant["networks"][network]["bf16"] = bf16
            params = params_from_dict(variant)
            for method in ("dense", "cs"):
                out = workdir / f"{network}-{method}-{bf16}"
                checkpoints = workdir / "checkpoints" / out.name
                if method == "cs":
                    run_cs_search(params, network, 0.0, 0, out, device, checkpoint_dir=checkpoints)
                else:
                    run_imp(params, network, 0, out, device, checkpoint_dir=checkpoints)
                timing = json.loads((out / "timing.json").read_text())
                seconds = timing["epoch_seconds"][: args.epochs]  # IMP: its dense level 0
                write_seconds = timing["checkpoint_seconds"]
                steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
                write = statistics.median(write_seconds) if write_seconds else 0.0
                row = {"network": network, "method": method, "bf16": bf16, "epoch_seconds": seconds,
                       "steady_epoch_seconds": steady, "epochs_per_second": 1.0 / steady,
                       "checkpoint_write_seconds": list(write_seconds), "checkpoint_share_of_epoch": write / steady}
                results["runs"].append(row)
                print(f"{network:9s} {method:5s} {'bf16' if bf16 else 'fp32'}: {steady:.2f} s/epoch "
                      f"({1 / steady:.2f} epochs/s), checkpoint write {write:.2f} s ({100 * write / steady:.1f}% of an "
                      f"epoch), epochs: {[round(s, 2) for s in seconds]}", flush=True)
    print(f"hardware: {results['hardware']}, torch {results['torch']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
