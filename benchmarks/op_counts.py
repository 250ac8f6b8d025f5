"""Ops dispatched per training step, by network and by what the masks do (dense, fixed mask, CS, L0).

On a GPU every dispatched op is at least one kernel launch, and the paper profile's steps are bound by
launches, not arithmetic; the count does not depend on the device, so it is taken here, on the CPU. One
step is what the training loop does per batch: forward, loss, zero_grad, backward and every optimiser's
step. Counted with a TorchDispatchMode after one warm-up step (lazy state, fused kernels), batch 8 of
random images (the count does not depend on the batch size). Two mask paths:

* `--path gpu` (default): the soft mask as CUDA runs it, ATen ops with the temperature kept a tensor;
* `--path cpu`: as the CPU runs it, the fused C++ op where it builds (`cs-repro build-kernel`).

    PYTHONPATH=src python benchmarks/op_counts.py [--path cpu] [--detail]

Prints `<network> cs/dense ops per step: <ratio>` (the target is <= 1.3) and the counts behind it.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

VARIANTS = ("dense", "fixed", "cs", "l0")


class OpCounter(TorchDispatchMode):
    """Counts every op that reaches the dispatcher below autograd, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _setup(network: str, variant: str):
    """Model, loss hook and optimisers for one training step, as the training loop builds them."""
    from cs_repro.masks import HardMasks, SoftMasks
    from cs_repro.methods.cs import CSConfig, CSSearch
    from cs_repro.methods.l0 import L0Config, L0Gates, L0Search
    from cs_repro.models import build_model, prunable_names
    from cs_repro.train import Hooks, OptimConfig, make_sgd

    torch.manual_seed(0)
    model = build_model(network, 10, 3, 32)
    names = prunable_names(network, model)
    loop = SimpleNamespace(model=model, optim=OptimConfig(), optimizers=[])
    hooks: Hooks = Hooks()
    if variant == "fixed":
        masks = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n in names}
        HardMasks.apply(model, masks)
    elif variant == "cs":
        soft = SoftMasks.attach(model, names, 0.0)
        hooks = CSSearch(soft, CSConfig(s0=0.0, lambda_=1e-8))
        soft.set_temperature(2.0)
    elif variant == "l0":
        config = L0Config(penalty=1e-4)
        gates = L0Gates.attach(model, names, config)
        gates.set_generator(torch.Generator().manual_seed(0))
        hooks = L0Search(gates, config)
    optimizers = (hooks.make_optimizers(loop, 0) if variant in ("cs", "l0")
                  else [make_sgd(list(model.parameters()), 0.1, loop.optim)])
    return model, hooks, loop, optimizers


def ops_per_step(network: str, variant: str, batch: int = 8, path: str = "gpu") -> collections.Counter[str]:
    from cs_repro import kernels, masks

    if path == "gpu":  # ATen ops, beta never read back to the host: what a CUDA step dispatches
        saved = (masks._beta_number, os.environ.get(kernels.KERNEL_ENV))
        masks._beta_number = lambda beta: None
        os.environ[kernels.KERNEL_ENV] = "aten"
    try:
        return _count(network, variant, batch)
    finally:
        if path == "gpu":
            masks._beta_number = saved[0]
            if saved[1] is None:
                os.environ.pop(kernels.KERNEL_ENV, None)
            else:
                os.environ[kernels.KERNEL_ENV] = saved[1]


def _count(network: str, variant: str, batch: int) -> collections.Counter[str]:
    model, hooks, loop, optimizers = _setup(network, variant)
    model.train()
    images, labels = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        logits = model(images)
        loss = hooks.loss(loop, logits, labels) if variant in ("cs", "l0") else F.cross_entropy(logits, labels)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    step()  # warm-up: momentum buffers, lazily built kernels
    counter = OpCounter()
    with counter:
        step()
    return counter.ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="resnet20,vgg16")
    parser.add_argument("--path", choices=("gpu", "cpu"), default="gpu",
                        help="the soft mask's ops as a GPU runs them (default) or as the CPU does")
    parser.add_argument("--detail", action="store_true", help="also print the ops CS adds over dense, by name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for network in args.networks.split(","):
        counts = {variant: ops_per_step(network, variant, path=args.path) for variant in VARIANTS}
        totals = {variant: sum(ops.values()) for variant, ops in counts.items()}
        print(f"{network} cs/dense ops per step: {totals['cs'] / totals['dense']:.2f}  ({args.path} mask path)")
        print(f"  {network} ops per step: " + ", ".join(f"{v} {totals[v]}" for v in VARIANTS), flush=True)
        if args.detail:
            extra = counts["cs"] - counts["dense"]
            print("  cs - dense: " + ", ".join(f"{name} {n}" for name, n in extra.most_common()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
