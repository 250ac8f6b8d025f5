"""Model zoo: a registry of networks and the choice of which parameters get pruned.

    build_model(name, num_classes, in_channels, image_size) -> nn.Module
    prunable_names(name_or_none, model, patterns) -> list[str]

To add a network, write one file that calls `register(ModelSpec(...))` and import it below.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from cs_repro.errors import UserError
from cs_repro.models.base import (
    MODELS,
    ModelSpec,
    apply_init,
    conv_linear_weights,
    init_weights,
    register,
)

# Importing the model files registers them.
from cs_repro.models import lenet as _lenet  # noqa: F401,E402
from cs_repro.models import resnet as _resnet  # noqa: F401,E402
from cs_repro.models import resnet50 as _resnet50  # noqa: F401,E402
from cs_repro.models import vgg as _vgg  # noqa: F401,E402

__all__ = [
    "MODELS",
    "ModelSpec",
    "apply_init",
    "build_model",
    "conv_linear_weights",
    "init_weights",
    "prunable_names",
    "register",
]


def build_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised registered network; UserError for an unknown name."""
    return MODELS.get(name).build(num_classes, in_channels, image_size)


def prunable_names(
    name_or_none: str | None, model: nn.Module, patterns: list[str] | None = None
) -> list[str]:
    """Names of the parameters of `model` to prune, in the model's parameter order.

    patterns: fnmatch globs (case-sensitive) over parameter names such as
        "layer1.0.conv1.weight"; when given (non-empty) they replace the default set, and each
        glob must match at least one parameter or a UserError is raised.
    Otherwise: the registered model's default set, or, when `name_or_none` is None (any
    nn.Module, e.g. a torchvision ResNet), the `.weight` of every Conv2d and Linear.
    An unknown model name raises UserError.
    """
    param_names = [n for n, _ in model.named_parameters()]
    if patterns:
        chosen: set[str] = set()
        for pattern in patterns:
            hits = [n for n in param_names if fnmatchcase(n, pattern)]
            if not hits:
                sample = ", ".join(param_names[:4]) + (", ..." if len(param_names) > 4 else "")
                raise UserError(
                    f"prune pattern {pattern!r} matches no parameter; "
                    f"use globs over names like {sample}"
                )
            chosen.update(hits)
        return [n for n in param_names if n in chosen]
    if name_or_none is None:
        names = conv_linear_weights(model)
    else:
        names = MODELS.get(name_or_none).default_prunable(model)
    known = set(param_names)
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(
            f"model {name_or_none!r} default prunable parameters {missing} are not in the "
            "given model; pass the name the model was built with"
        )
    return names
