"""What a CS soft mask costs per training step, next to the dense network.

Dense and CS-masked copies of each model are trained side by side in one process on random data
with the project's real optimiser setup (`cs_repro.train.make_sgd`: SGD, momentum 0.9, Nesterov,
weight decay 1e-4; for CS a second SGD over the mask logits without weight decay, as
`cs_repro.methods.cs` builds it, and the penalty fused into the mask's backward pass with
lambda = 1e-8). After warm-up, timed blocks of dense and masked steps alternate (the order flips
every repeat) so machine noise hits both; the reported numbers are medians over the blocks.

For scale it also times the cheapest masked weight there is: a fixed 0/1-style mask as a
parametrization doing one multiply forward and one backward, with no mask gradient and no second
optimiser. No soft mask can cost less than that on the same machine, because CS does all of it and more.

    python benchmarks/mask_overhead.py [--steps 20] [--repeats 7] [--threads N] [--models ...]

Prints, per model:
    <model> masked/dense step time: <ratio>
    <model> ms/step: dense <ms> masked <ms> fixed-mask floor <ms> (masked/dense per repeat: <min>-<max>)
    <model> fixed-mask floor/dense step time: <ratio>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from cs_repro.kernels import fused_soft_mask_available
from cs_repro.masks import SoftMasks
from cs_repro.models import build_model, prunable_names
from cs_repro.train import OptimConfig, make_sgd

SHAPES = {"lenet300_100": (1, 28), "resnet20": (3, 32)}
BATCH = 128
NUM_CLASSES = 10
PENALTY = 1e-8
LR = 0.1


class FixedMask(nn.Module):
    """The floor: W * m for a constant m, one multiply forward and one backward."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class Runner:
    """One model with its optimisers and a fixed batch; `step()` is one training step of the loop.

    kind: "dense", "masked" (CS soft masks, as the search trains them) or "fixed" (the floor)."""

    def __init__(self, name: str, kind: str, seed: int) -> None:
        in_channels, size = SHAPES[name]
        torch.manual_seed(seed)
        self.model = build_model(name, NUM_CLASSES, in_channels, size)
        self.model.train()
        config = OptimConfig()
        if kind == "fixed":
            for tensor_name in prunable_names(name, self.model):
                module = self.model.get_submodule(tensor_name.rpartition(".")[0])
                parametrize.register_parametrization(module, "weight", FixedMask(module.weight.shape))
        if kind == "masked":
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


def measure(name: str, steps: int, repeats: int, warmup: int) -> dict[str, tuple[float, float, float, float]]:
    """kind -> (median s/step, median, min and max of the per-repeat kind/dense ratios), dense included."""
    runners = {kind: Runner(name, kind, seed=0) for kind in ("dense", "masked", "fixed")}
    for _ in range(warmup):
        for runner in runners.values():
            runner.step()
    times: dict[str, list[float]] = {kind: [] for kind in runners}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for kind in order:
            times[kind].append(runners[kind].time_block(steps))
    result = {}
    for kind in runners:
        ratios = [t / d for t, d in zip(times[kind], times["dense"])]
        result[kind] = (statistics.median(times[kind]), statistics.median(ratios), min(ratios), max(ratios))
    return result


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
    kernel = "fused C++ kernel" if fused_soft_mask_available() else "ATen ops"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, repeats {args.repeats}, "
          f"soft mask on CPU: {kernel}")
    for name in args.models:
        steps = args.steps or default_steps(name)
        warmup = args.warmup if args.warmup is not None else steps
        result = measure(name, steps, args.repeats, warmup)
        print(f"{name} masked/dense step time: {result['masked'][1]:.2f}")
        print(f"{name} ms/step: dense {1e3 * result['dense'][0]:.2f} masked {1e3 * result['masked'][0]:.2f} "
              f"fixed-mask floor {1e3 * result['fixed'][0]:.2f} (masked/dense per repeat: "
              f"{result['masked'][2]:.2f}-{result['masked'][3]:.2f})")
        print(f"{name} fixed-mask floor/dense step time: {result['fixed'][1]:.2f}")


if __name__ == "__main__":
    main()
