"""How far apart the three definitions of a CS ticket start, per network (docs/method.md, "What a CS ticket is").

binary: mask x rewound weights W_k. released and folded both start from mask x W_k / sigmoid(s0) (released keeps the
factor in every forward pass, folded puts it into the weights once). So at the start of retraining the question is
only how much the network's output depends on multiplying every kept weight by c = 1/sigmoid(s0): a network with
BatchNorm after each layer absorbs the factor (BatchNorm in training mode renormalises), one without compounds it
(c^depth in the logits).

For each network: a freshly initialised model (the profile's own initialiser), a random mask keeping --keep of every
prunable tensor, one batch of random inputs of the dataset's shape, and the logits in training mode (as the first
retraining step sees them) with the kept weights scaled by 1 and by c. Prints the ratio of the logits' norms, the
relative difference of the softmax outputs, and how often the two predict the same class.

    python benchmarks/ticket_definitions.py [--s0 0.0] [--keep 0.1] [--batch 256] [--models lenet300_100 lenet5 resnet20 vgg16]
"""

from __future__ import annotations

import argparse
import math

import torch

from cs_repro.masks import HardMasks
from cs_repro.models import build_model, prunable_names
from cs_repro.models.base import apply_init

SHAPES = {"lenet300_100": (1, 28), "lenet5": (1, 28), "resnet20": (3, 32), "vgg16": (3, 32)}


def logits(model: torch.nn.Module, masks: dict[str, torch.Tensor], state: dict[str, torch.Tensor], scale: float,
           inputs: torch.Tensor) -> torch.Tensor:
    model.load_state_dict(state)
    hard = HardMasks.apply(model, masks, scale=scale)
    model.train()
    with torch.no_grad():
        out = model(inputs)
    hard.remove()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s0", type=float, default=0.0, help="the search's s0: the factor is 1/sigmoid(s0)")
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of each prunable tensor the mask keeps")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=list(SHAPES))
    args = parser.parse_args()
    torch.manual_seed(0)
    scale = 1.0 + math.exp(-args.s0)
    print(f"s0 = {args.s0:g}: kept weights x {scale:.4f} (released / folded) vs x 1 (binary); masks keep {args.keep:.0%}")
    for name in args.models:
        channels, size = SHAPES[name]
        model = apply_init(build_model(name, 10, channels, size))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        masks = {n: torch.rand(dict(model.named_parameters())[n].shape) < args.keep for n in prunable_names(name, model)}
        inputs = torch.randn(args.batch, channels, size, size)
        plain, scaled = (logits(model, masks, state, s, inputs) for s in (1.0, scale))
        p, q = plain.softmax(1), scaled.softmax(1)
        ratio = scaled.norm() / plain.norm()
        agree = (plain.argmax(1) == scaled.argmax(1)).float().mean()
        print(f"{name:13s} logit norm ratio {ratio:8.3f} (c^depth would be {scale ** len(masks):.3g}) | "
              f"softmax rel. diff {float((p - q).norm() / p.norm()):.3f} | same prediction {float(agree):.1%}")


if __name__ == "__main__":
    main()
