"""LeNet-300-100 (fully connected) and LeNet-5 (small conv net) for 28x28 grey images.

Both are registered here because they share the input check and their use (MNIST-scale runs);
any other network lives in its own file.

lenet300_100: flatten -> Linear(C*S*S, 300) -> ReLU -> Linear(300, 100) -> ReLU -> Linear(100, K).
    With C=1, S=28, K=10 this is the classic 784-300-100-10 net of the lottery-ticket papers,
    266,610 parameters. Default prunable: the three Linear weights (biases never), as in the
    lottery-ticket literature.

lenet5: Conv(C, 6, 5, pad 2) -> ReLU -> MaxPool 2 -> Conv(6, 16, 5) -> ReLU -> MaxPool 2 ->
    flatten -> Linear(16*5*5, 120) -> ReLU -> Linear(120, 84) -> ReLU -> Linear(84, K)
    (5x5 is the spatial size for 28x28 input). Chosen small so that it trains quickly on a
    2-core CPU. Default prunable: both conv weights and all three Linear weights, the final
    classifier included (biases never). 61,706 parameters for 1x28x28 input and 10 classes.

Both check their input shape in `forward` and raise ValueError naming the expected shape.
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


class LeNet300100(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.in_features = in_channels * image_size * image_size
        self.fc1 = nn.Linear(self.in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Already-flattened [B, C*S*S] input is accepted too.
        if not (x.dim() == 2 and x.shape[1] == self.in_features):
            check_image_input(x, "lenet300_100", self.in_channels, self.image_size)
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def _lenet5_feature_size(image_size: int) -> int:
    """Spatial size after conv(pad 2) -> pool 2 -> conv 5 (no pad) -> pool 2."""
    size = image_size // 2  # conv1 keeps the size, pool halves it
    size = size - 4  # conv2, 5x5, no padding
    return size // 2


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        feat = _lenet5_feature_size(image_size)
        if feat < 1:
            raise UserError(f"lenet5 needs image_size >= 12, got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * feat * feat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, "lenet5", self.in_channels, self.image_size)
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def _build_lenet300_100(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    check_build_args("lenet300_100", num_classes, in_channels, image_size)
    return LeNet300100(num_classes, in_channels, image_size)


def _build_lenet5(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    check_build_args("lenet5", num_classes, in_channels, image_size)
    return LeNet5(num_classes, in_channels, image_size)


def _fc_weights(model: nn.Module) -> list[str]:
    return ["fc1.weight", "fc2.weight", "fc3.weight"]


def _lenet5_weights(model: nn.Module) -> list[str]:
    return ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]


register(
    ModelSpec(
        name="lenet300_100",
        build=_build_lenet300_100,
        default_prunable=_fc_weights,
        description="LeNet-300-100 MLP (784-300-100-10 for MNIST); prunes all three Linear weights",
    )
)

register(
    ModelSpec(
        name="lenet5",
        build=_build_lenet5,
        default_prunable=_lenet5_weights,
        description="small LeNet-5 conv net for 28x28 grey images; prunes conv and Linear weights",
    )
)
