"""Shared pieces of the model zoo: the registry, its entry type, weight init and input checks.

Every network file registers exactly one `ModelSpec` in `MODELS`; adding a network is one new
file plus one import line in `cs_repro.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cs_repro.errors import UserError
from cs_repro.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """One registered network.

    name: registry key.
    build: (num_classes, in_channels, image_size) -> freshly initialised nn.Module.
    default_prunable: model -> names of the parameters pruned when the user gives no globs.
    description: one line shown in listings.
    """

    name: str
    build: Callable[[int, int, int], nn.Module]
    default_prunable: Callable[[nn.Module], list[str]]
    description: str


MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    """Add `spec` to `MODELS` under its own name."""
    return MODELS.register(spec.name)(spec)


def init_weights(model: nn.Module) -> nn.Module:
    """Initialise as the released CS code does, for every model in the zoo.

    Conv2d and Linear weights: Xavier (Glorot) normal, std = sqrt(2 / (fan_in + fan_out)) with
    fan_in = in_channels * kernel area and fan_out = out_channels * kernel area.
    Their biases: zero. BatchNorm: weight 1, bias 0.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def apply_init(model: nn.Module, weights: str = "default", batchnorm: str = "default") -> nn.Module:
    """Re-initialise a built model another way (params `init`, `bn_init`), from torch's global generator.

    weights 'kaiming_normal': Conv2d and Linear weights ~ N(0, 2 / fan_in) (He et al.; what open_lth
    uses), biases 0. batchnorm 'uniform': BatchNorm scales ~ U(0, 1) (open_lth), shifts 0. 'default'
    keeps `init_weights`' choice.
    """
    for module in model.modules():
        if weights == "kaiming_normal" and isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif batchnorm == "uniform" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.weight is not None:
                nn.init.uniform_(module.weight, 0.0, 1.0)
    return model


def conv_linear_weights(model: nn.Module) -> list[str]:
    """Names of the `.weight` of every Conv2d and Linear, in module order.

    This is the default prunable set of any network that is not in the registry.
    """
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]


def check_build_args(model_name: str, num_classes: int, in_channels: int, image_size: int) -> None:
    """Reject non-positive sizes with a UserError naming the bad value."""
    for label, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{model_name}: {label} must be a positive integer, got {value!r}")


def check_image_input(x: torch.Tensor, model_name: str, channels: int, size: int | None) -> None:
    """Raise ValueError naming the expected shape when `x` is not [B, channels, size, size].

    `size=None` means any spatial size is accepted (only batch and channel dims are checked).
    """
    ok = x.dim() == 4 and x.shape[1] == channels
    if ok and size is not None:
        ok = x.shape[2] == size and x.shape[3] == size
    if not ok:
        spatial = f"{size}, {size}" if size is not None else "H, W"
        raise ValueError(
            f"{model_name} expects input of shape [B, {channels}, {spatial}], "
            f"got {list(x.shape)}; rebuild the model with matching in_channels/image_size"
        )
