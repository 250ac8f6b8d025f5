"""Accuracy effect of bf16 autocast: dense LeNet-5 on the real Fashion-MNIST, fp32 vs bf16, same seeds.

Needs data/prepared/fashion_mnist.pt (`python stages/prepare.py fashion_mnist`) and a CUDA GPU (autocast is
CUDA-only here). PYTHONPATH=src python benchmarks/bf16_accuracy.py --epochs 8 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cs_repro import run as ex
from cs_repro.data.prepared import load_prepared
from cs_repro.device import choose_device, hardware_name
from cs_repro.params import params_from_dict
from cs_repro.train import Hooks, TrainingLoop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = choose_device()
    results = {"hardware": hardware_name(device), "model": args.model, "epochs": args.epochs, "runs": []}
    for bf16 in (False, True):
        params = params_from_dict({
            "networks": {"net": {"model": args.model, "dataset": "fashion_mnist", "val_size": 5000,
                                 "epochs": args.epochs, "lr": 0.05, "lr_milestones": [args.epochs - 2],
                                 "bf16": bf16}},
            "sweep": {"networks": ["net"], "datasets": ["fashion_mnist"]},
        })
        net = params.network("net")
        accuracies = []
        for seed in map(int, args.seeds.split(",")):
            model, _ = ex.make_model(net, seed, device)
            data = ex.make_splits(net, load_prepared("fashion_mnist"), seed, device)
            loop = TrainingLoop(model, data, Hooks(), epochs=net.epochs, optim=ex.optim_config(net), seed=seed,
                                device=device, bf16=bf16)
            accuracies.append(loop.run()[-1].test_accuracy)
            results["runs"].append({"bf16": bf16, "seed": seed, "test_accuracy": accuracies[-1],
                                    "seconds": sum(loop.epoch_seconds)})
        print(f"{'bf16' if bf16 else 'fp32'}: test accuracy {100 * statistics.mean(accuracies):.2f} "
              f"± {100 * statistics.stdev(accuracies):.2f}% over seeds {args.seeds}", flush=True)
    print("hardware:", results["hardware"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
