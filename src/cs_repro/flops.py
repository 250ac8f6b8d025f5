"""Parameter and FLOP counts of a (possibly masked) network for one input.

Method: `count_cost` runs one forward pass on a zero input of shape [1, *input_shape] (eval
mode, no grad; the model's training flag is restored afterwards) with forward hooks on every
nn.Conv2d and nn.Linear, which record how many output positions each layer computes:
  - Conv2d: H_out * W_out of its output;
  - Linear: the number of output vectors per example (1 for an ordinary [B, features] input).
A module called several times in one forward pass has its positions summed over the calls.

Convention (also in `CONVENTION`): one FLOP is one multiply-accumulate (MAC) of a weight;
  layer FLOPs = nonzero weights x output positions,
so a conv's FLOPs are nonzero_weights x H_out x W_out and a Linear's are its nonzero weights.
Dense FLOPs use all weights. Biases, BatchNorm, pooling, activations and residual additions
are not counted, neither as FLOPs nor in the per-layer parameter columns.

Nonzero weights of a layer: the nonzero entries of its mask when `masks` holds one for that
weight (keyed by parameter name, e.g. "fc1.weight"); otherwise the nonzero entries of the
weight tensor itself. Layers that are not pruned are therefore counted dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cs_repro.errors import UserError

CONVENTION = (
    "FLOPs = multiply-accumulates of nonzero Conv2d/Linear weights for one input "
    "(1 MAC = 1 FLOP; conv: nonzero weights x H_out x W_out; linear: nonzero weights); "
    "biases, BatchNorm, pooling, activations and additions not counted"
)


@dataclass(frozen=True)
class LayerCost:
    name: str  # module name, e.g. "layer1.0.conv1"
    kind: str  # "conv" or "linear"
    params_total: int  # weight entries
    params_nonzero: int  # nonzero weight entries (from the mask when given)
    flops_dense: int
    flops_nonzero: int


@dataclass(frozen=True)
class CostReport:
    rows: list[LayerCost]
    all_params: int  # every parameter of the model: weights, biases, BatchNorm
    input_shape: tuple[int, ...]
    convention: str = field(default=CONVENTION)

    @property
    def params_total(self) -> int:
        return sum(r.params_total for r in self.rows)

    @property
    def params_nonzero(self) -> int:
        return sum(r.params_nonzero for r in self.rows)

    @property
    def flops_dense(self) -> int:
        return sum(r.flops_dense for r in self.rows)

    @property
    def flops_nonzero(self) -> int:
        return sum(r.flops_nonzero for r in self.rows)

    @property
    def density(self) -> float:
        """Fraction of Conv2d/Linear weights that remain."""
        return self.params_nonzero / self.params_total if self.params_total else 1.0

    @property
    def flops_fraction(self) -> float:
        return self.flops_nonzero / self.flops_dense if self.flops_dense else 1.0

    def format(self) -> str:
        """A plain-text table with one row per layer, the totals and the convention."""
        header = f"{'layer':<28} {'kind':<6} {'weights':>12} {'nonzero':>12} {'FLOPs':>14} {'FLOPs nz':>14}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r.name:<28} {r.kind:<6} {r.params_total:>12,} {r.params_nonzero:>12,} "
                f"{r.flops_dense:>14,} {r.flops_nonzero:>14,}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'total':<28} {'':<6} {self.params_total:>12,} {self.params_nonzero:>12,} "
            f"{self.flops_dense:>14,} {self.flops_nonzero:>14,}"
        )
        lines.append(
            f"all parameters {self.all_params:,}; weight density {self.density:.4f}; "
            f"FLOPs fraction {self.flops_fraction:.4f}; input {list(self.input_shape)}"
        )
        lines.append(f"convention: {self.convention}")
        return "\n".join(lines)


def count_cost(
    model: nn.Module,
    input_shape: tuple[int, ...] | list[int],
    masks: dict[str, torch.Tensor] | None = None,
) -> CostReport:
    """Count weights and FLOPs of `model` for one input of shape `input_shape` (no batch dim).

    masks: optional {parameter name: 0/1 tensor of the weight's shape}; see the module
    docstring for the method and the FLOP convention. A mask whose name is not the weight of
    a Conv2d/Linear, or whose shape differs from the weight's, raises UserError.
    """
    shape = tuple(int(s) for s in input_shape)
    masks = dict(masks or {})
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    weight_names = {(f"{name}.weight" if name else "weight"): name for name in layers}
    unknown = sorted(set(masks) - set(weight_names))
    if unknown:
        raise UserError(
            f"masks for {unknown} do not name a Conv2d/Linear weight of the model; "
            "use parameter names such as " + ", ".join(list(weight_names)[:3])
        )

    positions: dict[str, int] = {name: 0 for name in layers}

    def make_hook(name: str, module: nn.Module):
        def hook(_mod: nn.Module, _inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                positions[name] += int(output.shape[-1] * output.shape[-2])
            else:
                # Output vectors per example: all dims but batch and features.
                positions[name] += int(output.numel() // (output.shape[0] * output.shape[-1]))

        return hook

    handles = [m.register_forward_hook(make_hook(n, m)) for n, m in layers.items()]
    try:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros((1, *shape), device=device, dtype=dtype))
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()

    rows = []
    for pname, mname in weight_names.items():
        module = layers[mname]
        weight = module.weight
        if pname in masks:
            mask = masks[pname]
            if tuple(mask.shape) != tuple(weight.shape):
                raise UserError(
                    f"mask for {pname} has shape {list(mask.shape)}, "
                    f"expected the weight's shape {list(weight.shape)}"
                )
            nonzero = int(torch.count_nonzero(mask.detach()))
        else:
            nonzero = int(torch.count_nonzero(weight.detach()))
        total = weight.numel()
        pos = positions[mname]
        rows.append(
            LayerCost(
                name=mname,
                kind="conv" if isinstance(module, nn.Conv2d) else "linear",
                params_total=total,
                params_nonzero=nonzero,
                flops_dense=total * pos,
                flops_nonzero=nonzero * pos,
            )
        )
    all_params = sum(p.numel() for p in model.parameters())
    return CostReport(rows=rows, all_params=all_params, input_shape=shape)
