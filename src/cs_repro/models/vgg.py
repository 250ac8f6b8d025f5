"""VGG-16 with BatchNorm for CIFAR-sized images.

Features: cfg [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
each number a 3x3 conv (padding 1, with bias) + BatchNorm + ReLU, each M a 2x2 max pool.
Head: global average pool -> flatten -> Linear(512, num_classes).

Our choice, written down because the paper does not pin its VGG protocol: a single Linear
classifier (no hidden fully connected layers, no dropout). For 32x32 input the features are
already 1x1 after the fifth pool, so the average pool is the identity there; it only lets
larger images (image_size >= 32) work.

With 3 input channels and 10 classes: 14,714,688 conv parameters (weights and biases),
8,448 BatchNorm parameters, 5,130 classifier parameters; 14,728,266 in total.

Default prunable set: the weights of all 13 convs. BatchNorm, conv biases and the classifier
are not pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from cs_repro.errors import UserError
from cs_repro.models.base import (
    ModelSpec,
    check_build_args,
    check_image_input,
    init_weights,
    register,
)

VGG16_CFG: list[int | str] = [
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
]  # fmt: skip


class CifarVGG(nn.Module):
    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        name: str = "vgg16",
    ) -> None:
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        ch = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [
                    nn.Conv2d(ch, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.name, self.in_channels, None)
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(x)


def _build_vgg16(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    check_build_args("vgg16", num_classes, in_channels, image_size)
    if image_size < 32:
        raise UserError(f"vgg16 has five 2x2 pools and needs image_size >= 32, got {image_size}")
    return CifarVGG(VGG16_CFG, num_classes, in_channels, name="vgg16")


def _conv_weights(model: nn.Module) -> list[str]:
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]


register(
    ModelSpec(
        name="vgg16",
        build=_build_vgg16,
        default_prunable=_conv_weights,
        description="CIFAR VGG-16 with BatchNorm and a Linear(512, K) head; prunes all 13 convs",
    )
)
