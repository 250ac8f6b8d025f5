"""ResNet-20 for CIFAR-sized images (He et al. 2016, the CIFAR variant), as the CS authors built it.

Stem: 3x3 conv (16 channels, no bias) + BatchNorm + ReLU.
Three stages of three BasicBlocks with 16, 32 and 64 channels. A BasicBlock is
3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, added to the shortcut, then ReLU.
The first block of stages 2 and 3 has stride 2 and a projection shortcut.
Head: global average pool -> Linear(64, num_classes).

Two registered forms, differing only in that projection shortcut:

* ``resnet20`` (the default, the authors' network): the shortcut is a bare 1x1 stride-2 conv
  without bias and **without BatchNorm**, so the network has 19 BatchNorm2d layers. With 3 input
  channels and 10 classes: 272,282 parameters (267,696 in the 19 3x3 convs, 2,560 in the two
  1x1 shortcut convs, 1,376 in BatchNorm, 650 in the classifier).
* ``resnet20_bn_shortcut`` (the form open_lth's CIFAR ResNet uses): the 1x1 conv is followed by
  BatchNorm, 21 BatchNorm2d layers, 272,474 parameters. Only for comparisons with that lineage.

Default prunable set (both forms): the weights of all 19 3x3 convs, the stem included. The 1x1
shortcut convs, BatchNorm and the final Linear are not pruned.
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


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut_bn: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_ch != out_ch:
            projection = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)
            # The authors' shortcut is the bare conv; open_lth's adds BatchNorm after it.
            layers = [projection, nn.BatchNorm2d(out_ch)] if shortcut_bn else [projection]
            self.shortcut: nn.Module = nn.Sequential(*layers)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with `blocks_per_stage` BasicBlocks per stage (3 gives ResNet-20).

    shortcut_bn: BatchNorm after the 1x1 projection shortcuts (False: the CS authors' network).
    """

    def __init__(
        self,
        blocks_per_stage: int = 3,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        name: str = "resnet20",
        shortcut_bn: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_ch = widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (index > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride, shortcut_bn))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.name, self.in_channels, None)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def _resnet20_builder(name: str, shortcut_bn: bool):
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        check_build_args(name, num_classes, in_channels, image_size)
        if image_size < 4:
            raise UserError(f"{name} needs image_size >= 4, got {image_size}")
        return CifarResNet(3, num_classes, in_channels, name=name, shortcut_bn=shortcut_bn)

    return build


def _resnet_3x3_weights(model: nn.Module) -> list[str]:
    """Every conv weight outside the projection shortcuts (all 3x3 convs)."""
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and "shortcut" not in name.split(".")
    ]


register(
    ModelSpec(
        name="resnet20",
        build=_resnet20_builder("resnet20", shortcut_bn=False),
        default_prunable=_resnet_3x3_weights,
        description="CIFAR ResNet-20 as the CS authors built it (bare 1x1 projection shortcuts, 19 BatchNorm); "
                    "prunes the 19 3x3 convs",
    )
)
register(
    ModelSpec(
        name="resnet20_bn_shortcut",
        build=_resnet20_builder("resnet20_bn_shortcut", shortcut_bn=True),
        default_prunable=_resnet_3x3_weights,
        description="CIFAR ResNet-20 with BatchNorm after the 1x1 projection shortcuts (open_lth's form, 21 BatchNorm); "
                    "prunes the 19 3x3 convs",
    )
)
