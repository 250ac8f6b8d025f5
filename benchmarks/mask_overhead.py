"""What a CS soft mask costs per training step, next to the dense network.

Dense and CS-masked copies of each model are trained side by side in one process on random data
with the project's real optimiser setup (`cs_repro.train.make_sgd`: SGD, momentum 0.9, Nesterov,
weight decay 1e-4; for CS a second SGD over the mask logits without weight decay, as
`cs_repro.methods.cs` builds it, and the penalty fused into the mask's backward pass with
lambda = 1e-8). After warm-up, timed blocks of dense and masked steps alternate (the order flips
every repeat) so machine noise hits both; the reported numbers are medians over the blocks.

    python benchmarks/mask_overhead.py [--steps 20] [--repeats 7] [--threads N] [--models ...]

Prints, per model:
    <model> masked/dense step time: <ratio>
    <model> ms/step: dense <ms> masked <ms>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cs_repro.masks import SoftMasks
from cs_repro.models import build_model, prunable_names
from cs_repro.train import OptimConfig, make_sgd

SHAPES = {"lenet300_100": (1, 28), "resnet20": (3, 32)}
BATCH = 128
NUM_CLASSES = 10
PENALTY = 1e-8
LR = 0.1


class Runner:
    """One model with its optimisers and a fixed batch; `step()` is one training step of the loop."""

    def __init__(self, name: str, masked: bool, seed: int) -> None:
        in_channels, size = SHAPES[name]
        torch.manual_seed(seed)
        self.model = build_model(name, NUM_CLASSES, in_channels, size)
        self.model.train()
        config = OptimConfig()
        if masked:
            self.masks = SoftMasks.attach(self.model, prunable_names(name, self.model), s0=0.0)
            self.masks.fuse_penalty(PENALTY)
            logit_ids = {id(p) for p in self.masks.logits()}
            weights = [p for p in self.model.parameters() if id(p) not in logit_ids]
            self.optimizers = [
                make_sgd(weights, LR, config),
                make_sgd(self.masks.logits(), LR, config, weight_decay=0.0),
            ]
        else:
            self.optimizers = [make_sgd([p for p in self.model.parameters() if p.requires_grad], LR, config)]
        generator = torch.Generator().manual_seed(seed + 1)
        self.inputs = torch.randn(BATCH, in_channels, size, size, generator=generator)
        self.labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator)

    def step(self) -> None:
        logits = self.model(self.inputs)
        loss = F.cross_entropy(logits, self.labels)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()

    def time_block(self, steps: int) -> float:
        """Seconds per step over `steps` consecutive steps."""
        started = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - started) / steps


def measure(name: str, steps: int, repeats: int, warmup: int) -> tuple[float, float, float]:
    """(dense s/step, masked s/step, median of the per-repeat masked/dense ratios)."""
    dense = Runner(name, masked=False, seed=0)
    masked = Runner(name, masked=True, seed=0)
    for _ in range(warmup):
        dense.step()
        masked.step()
    dense_times, masked_times = [], []
    for repeat in range(repeats):
        order = (dense, masked) if repeat % 2 == 0 else (masked, dense)
        for runner in order:
            (dense_times if runner is dense else masked_times).append(runner.time_block(steps))
    ratios = [m / d for m, d in zip(masked_times, dense_times)]
    return statistics.median(dense_times), statistics.median(masked_times), statistics.median(ratios)


def default_steps(name: str) -> int:
    return 100 if name == "lenet300_100" else 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed block (default: 100 for lenet300_100, 2 for resnet20)")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per variant (median taken)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: one block)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, repeats {args.repeats}")
    for name in args.models:
        steps = args.steps or default_steps(name)
        warmup = args.warmup if args.warmup is not None else steps
        dense_s, masked_s, ratio = measure(name, steps, args.repeats, warmup)
        print(f"{name} masked/dense step time: {ratio:.2f}")
        print(f"{name} ms/step: dense {1e3 * dense_s:.2f} masked {1e3 * masked_s:.2f}")


if __name__ == "__main__":
    main()
