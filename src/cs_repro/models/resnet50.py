"""ResNet-50 for ImageNet (He et al. 2016): torchvision's architecture, randomly initialised (torchvision's own
initialisation: Kaiming-normal convolutions, BatchNorm scale 1, no pretrained weights). With 1000 classes:
25,557,032 parameters.

Default prunable set: every convolution weight (the 7x7 stem, the 1x1 and 3x3 convolutions of the 16
bottlenecks and the 4 downsampling projections: 53 tensors, 23,454,912 weights) and the final Linear weight
(2,048,000): 25,502,912 weights. BatchNorm and biases are not pruned. The paper does not say what its ImageNet
runs prune; this is the set gradual magnitude pruning is usually applied to on ResNet-50 and keeps CS, GMP,
magnitude pruning and L0 on the same weights (docs/method.md).
"""

from __future__ import annotations

from torch import nn

from cs_repro.errors import UserError
from cs_repro.models.base import ModelSpec, conv_linear_weights, register


def _build_resnet50(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet50

    if in_channels != 3:
        raise UserError(f"resnet50 takes 3-channel images; this dataset has {in_channels}")
    if image_size < 32:
        raise UserError(f"resnet50 needs images of at least 32 pixels (it downsamples 32x); got {image_size}")
    return resnet50(weights=None, num_classes=num_classes)


register(
    ModelSpec(
        name="resnet50",
        build=_build_resnet50,
        default_prunable=conv_linear_weights,
        description="ResNet-50 (torchvision's, random init) for ImageNet; prunes every conv and the final Linear weight",
    )
)
