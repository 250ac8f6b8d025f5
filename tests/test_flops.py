"""FLOP and parameter counting, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cs_repro.errors import UserError
from cs_repro.flops import CONVENTION, count_cost
from cs_repro.models import build_model


def test_lenet300_100_dense() -> None:
    model = build_model("lenet300_100", 10, 1, 28)
    report = count_cost(model, (1, 28, 28))
    assert [r.name for r in report.rows] == ["fc1", "fc2", "fc3"]
    assert [r.kind for r in report.rows] == ["linear"] * 3
    assert report.flops_dense == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert report.flops_nonzero == 266_200
    assert report.params_total == report.params_nonzero == 266_200  # weights only
    assert report.all_params == 266_610  # biases included
    assert report.density == 1.0 and report.flops_fraction == 1.0


def test_lenet300_100_half_of_first_layer_masked() -> None:
    model = build_model("lenet300_100", 10, 1, 28)
    mask = torch.ones(300, 784)
    mask.view(-1)[: 784 * 300 // 2] = 0
    report = count_cost(model, (1, 28, 28), masks={"fc1.weight": mask})
    assert report.flops_dense == 266_200
    assert report.flops_nonzero == 266_200 - 784 * 300 // 2
    fc1 = report.rows[0]
    assert fc1.params_nonzero == 784 * 300 // 2 and fc1.params_total == 784 * 300
    # untouched layers stay dense
    assert report.rows[1].flops_nonzero == report.rows[1].flops_dense == 30_000


def test_zeroed_weights_count_without_a_mask() -> None:
    model = build_model("lenet300_100", 10, 1, 28)
    with torch.no_grad():
        model.fc3.weight[:5] = 0  # 5 of 10 output rows
    report = count_cost(model, (1, 28, 28))
    assert report.rows[2].params_nonzero == 500
    assert report.flops_nonzero == 266_200 - 500


def test_conv_flops_are_nonzero_weights_times_output_area() -> None:
    # a standalone conv: 3 -> 8 channels, 3x3, stride 2, pad 1 on 3x17x17
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    h_out = (17 + 2 * 1 - 3) // 2 + 1  # 9
    mask = torch.ones(8, 3, 3, 3)
    mask[:3] = 0  # 3 filters of 27 weights gone
    nonzero = 5 * 27
    report = count_cost(net, (3, 17, 17), masks={"0.weight": mask})
    (row,) = report.rows
    assert row.kind == "conv" and row.name == "0"
    assert row.params_nonzero == nonzero
    assert row.flops_nonzero == nonzero * h_out * h_out == 135 * 81
    assert row.flops_dense == 8 * 27 * 81


def test_lenet5_conv_layers_by_hand() -> None:
    model = build_model("lenet5", 10, 1, 28)
    rows = {r.name: r for r in count_cost(model, (1, 28, 28)).rows}
    assert rows["conv1"].flops_dense == (6 * 1 * 25) * 28 * 28  # pad 2 keeps 28x28
    assert rows["conv2"].flops_dense == (16 * 6 * 25) * 10 * 10  # 14x14 -> 10x10
    assert rows["fc1"].flops_dense == 400 * 120


def test_resnet20_counts_shortcuts_dense_and_stem_by_hand() -> None:
    model = build_model("resnet20", 10, 3, 32)
    report = count_cost(model, (3, 32, 32))
    rows = {r.name: r for r in report.rows}
    assert len(report.rows) == 19 + 2 + 1
    assert rows["conv1"].flops_dense == 3 * 16 * 9 * 32 * 32
    assert rows["layer2.0.shortcut.0"].flops_dense == 16 * 32 * 16 * 16
    assert rows["layer3.2.conv2"].flops_dense == 64 * 64 * 9 * 8 * 8
    assert rows["fc"].flops_dense == 640
    # total conv+linear MACs of ResNet-20 on 32x32: 40,813,184
    stage = lambda cin, c, hw, first: (  # noqa: E731
        (cin * c * 9 + c * c * 9 + (cin * c if first else 0)) + 2 * (2 * c * c * 9)
    ) * hw * hw
    expected = (
        3 * 16 * 9 * 1024
        + 3 * 2 * 16 * 16 * 9 * 1024
        + stage(16, 32, 16, True)
        + stage(32, 64, 8, True)
        + 640
    )
    assert report.flops_dense == expected
    assert expected == 40_813_184
    assert report.all_params == 272_282  # the authors' ResNet-20: no BatchNorm after the 1x1 shortcuts


def test_linear_on_sequence_counts_every_position() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    report = count_cost(Tokens(), (7, 4))
    assert report.rows[0].flops_dense == 24 * 7


def test_training_flag_restored_and_report_prints() -> None:
    model = build_model("resnet20", 10, 3, 32).train()
    report = count_cost(model, [3, 32, 32])
    assert model.training
    text = report.format()
    assert "layer1.0.conv1" in text and "convention:" in text
    assert report.convention == CONVENTION and "MAC" in CONVENTION


def test_bad_masks_are_user_errors() -> None:
    model = build_model("lenet300_100", 10, 1, 28)
    with pytest.raises(UserError, match="fc1.bias"):
        count_cost(model, (1, 28, 28), masks={"fc1.bias": torch.ones(300)})
    with pytest.raises(UserError, match="shape"):
        count_cost(model, (1, 28, 28), masks={"fc1.weight": torch.ones(784, 300)})
