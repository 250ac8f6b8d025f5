"""Model zoo: parameter counts, default prunable sets, glob overrides, shapes, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cs_repro.errors import UserError
from cs_repro.models import MODELS, ModelSpec, build_model, prunable_names

SHAPES = {  # name -> (in_channels, image_size)
    "lenet300_100": (1, 28),
    "lenet5": (1, 28),
    "resnet20": (3, 32),
    "resnet20_bn_shortcut": (3, 32),
    "vgg16": (3, 32),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_models() -> None:
    assert MODELS.names() == ["lenet300_100", "lenet5", "resnet20", "resnet20_bn_shortcut", "resnet50", "vgg16"]
    for name in MODELS.names():
        spec = MODELS.get(name)
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.description and "\n" not in spec.description


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match="resnet20"):
        build_model("resnet21", 10, 3, 32)
    with pytest.raises(UserError):
        prunable_names("nope", nn.Linear(2, 2), None)


def test_bad_build_args_are_user_errors() -> None:
    with pytest.raises(UserError, match="num_classes"):
        build_model("lenet300_100", 0, 1, 28)
    with pytest.raises(UserError, match="image_size"):
        build_model("vgg16", 10, 3, 16)


# ---- parameter counts, worked out from the architectures ----


def test_lenet300_100_param_count() -> None:
    expected = (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)
    assert expected == 266_610
    assert n_params(build_model("lenet300_100", 10, 1, 28)) == 266_610


def test_lenet5_param_count() -> None:
    expected = (
        (1 * 6 * 25 + 6)
        + (6 * 16 * 25 + 16)
        + (16 * 5 * 5 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * 10 + 10)
    )
    assert expected == 61_706
    assert n_params(build_model("lenet5", 10, 1, 28)) == expected


def _resnet20_expected_params(shortcut_bn: bool) -> int:
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k

    def bn(c: int) -> int:
        return 2 * c

    def projection(cin: int, cout: int) -> int:
        return conv(cin, cout, 1) + (bn(cout) if shortcut_bn else 0)

    stem = conv(3, 16, 3) + bn(16)
    stage1 = 3 * (2 * conv(16, 16, 3) + 2 * bn(16))
    stage2 = (conv(16, 32, 3) + conv(32, 32, 3) + 2 * bn(32) + projection(16, 32)) + 2 * (
        2 * conv(32, 32, 3) + 2 * bn(32)
    )
    stage3 = (conv(32, 64, 3) + conv(64, 64, 3) + 2 * bn(64) + projection(32, 64)) + 2 * (
        2 * conv(64, 64, 3) + 2 * bn(64)
    )
    head = 64 * 10 + 10
    return stem + stage1 + stage2 + stage3 + head


def test_resnet20_is_the_authors_network_bare_projection_shortcuts() -> None:
    model = build_model("resnet20", 10, 3, 32)
    assert _resnet20_expected_params(shortcut_bn=False) == 272_282
    assert n_params(model) == 272_282
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19
    # the projection shortcut is one bias-free 1x1 stride-2 conv and nothing else
    shortcut = model.layer2[0].shortcut
    assert [type(m) for m in shortcut] == [nn.Conv2d]
    assert shortcut[0].kernel_size == (1, 1) and shortcut[0].stride == (2, 2)
    assert not any(
        m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d)
    ), "CIFAR ResNet convs have no bias"


def test_resnet20_bn_shortcut_is_the_explicit_open_lth_form() -> None:
    model = build_model("resnet20_bn_shortcut", 10, 3, 32)
    assert _resnet20_expected_params(shortcut_bn=True) == 272_474
    assert n_params(model) == 272_474
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21
    # same prunable set as the default form
    names = prunable_names("resnet20_bn_shortcut", model, None)
    assert sum(dict(model.named_parameters())[n].numel() for n in names) == 267_696


def test_vgg16_param_counts() -> None:
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    conv_params, bn_params, cin = 0, 0, 3
    for c in cfg:
        conv_params += cin * c * 9 + c
        bn_params += 2 * c
        cin = c
    assert conv_params == 14_714_688
    assert bn_params == 8_448
    model = build_model("vgg16", 10, 3, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and len(linears) == 1
    assert sum(n_params(m) for m in convs) == conv_params
    assert n_params(linears[0]) == 512 * 10 + 10
    assert n_params(model) == conv_params + bn_params + 5_130 == 14_728_266


# ---- default prunable sets ----


def test_default_prunable_lenets() -> None:
    m = build_model("lenet300_100", 10, 1, 28)
    assert prunable_names("lenet300_100", m, None) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    m = build_model("lenet5", 10, 1, 28)
    assert prunable_names("lenet5", m, None) == [
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ]


def test_default_prunable_resnet20_is_the_19_3x3_convs() -> None:
    model = build_model("resnet20", 10, 3, 32)
    expected = ["conv1.weight"] + [
        f"layer{s}.{b}.conv{c}.weight" for s in (1, 2, 3) for b in (0, 1, 2) for c in (1, 2)
    ]
    names = prunable_names("resnet20", model, None)
    assert names == expected and len(names) == 19
    params = dict(model.named_parameters())
    assert all(params[n].shape[-2:] == (3, 3) for n in names)
    assert "layer2.0.shortcut.0.weight" in params and "layer3.0.shortcut.0.weight" in params


def test_default_prunable_vgg16_is_the_13_convs() -> None:
    model = build_model("vgg16", 10, 3, 32)
    names = prunable_names("vgg16", model, None)
    params = dict(model.named_parameters())
    assert len(names) == 13
    assert all(params[n].dim() == 4 for n in names)
    assert "classifier.weight" not in names
    assert all(n.endswith(".weight") for n in names)


def test_unregistered_module_defaults_to_conv_and_linear_weights() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    names = prunable_names(None, model, None)
    expected = [
        f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    assert names == expected
    assert len(names) == 21  # 17 3x3/7x7 convs + 3 downsample 1x1 convs + fc
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert not any("bn" in n or n.endswith(".bias") for n in names)


# ---- glob overrides ----


def test_glob_patterns_override_the_default() -> None:
    model = build_model("resnet20", 10, 3, 32)
    names = prunable_names("resnet20", model, ["layer3.*.conv*.weight", "fc.weight"])
    assert names == [f"layer3.{b}.conv{c}.weight" for b in (0, 1, 2) for c in (1, 2)] + [
        "fc.weight"
    ]
    # globs also work for unregistered modules, and may select shortcuts
    names = prunable_names(None, model, ["*shortcut.0.weight"])
    assert names == ["layer2.0.shortcut.0.weight", "layer3.0.shortcut.0.weight"]


def test_glob_matching_nothing_is_a_user_error() -> None:
    model = build_model("lenet300_100", 10, 1, 28)
    with pytest.raises(UserError, match="fc9"):
        prunable_names("lenet300_100", model, ["fc1.weight", "fc9.*"])


# ---- forward shapes and input checks ----


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_shape(name: str) -> None:
    c, s = SHAPES[name]
    model = build_model(name, 10, c, s)
    x = torch.randn(2, c, s, s)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "vgg16"])
def test_channels_last_input(name: str) -> None:
    c, s = SHAPES[name]
    model = build_model(name, 10, c, s).eval()
    x = torch.randn(2, c, s, s)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_other_class_counts_and_sizes() -> None:
    assert build_model("resnet20", 100, 3, 32)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert build_model("lenet5", 10, 3, 32)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    lenet = build_model("lenet300_100", 10, 1, 28)
    assert lenet(torch.randn(3, 784)).shape == (3, 10)  # pre-flattened input accepted


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5"])
def test_wrong_input_shape_names_the_expected_shape(name: str) -> None:
    model = build_model(name, 10, 1, 28)
    with pytest.raises(ValueError, match=r"expects input of shape \[B, 1, 28, 28\]"):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("name", ["resnet20", "vgg16"])
def test_wrong_channels_names_the_expected_shape(name: str) -> None:
    model = build_model(name, 10, 3, 32)
    with pytest.raises(ValueError, match=r"expects input of shape \[B, 3, H, W\]"):
        model(torch.randn(2, 1, 32, 32))


# ---- init ----


def test_init_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("vgg16", 10, 3, 32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            assert torch.all(m.bias == 0)
    # the biggest conv (512 -> 512, 3x3): 2.36M samples, so the std is tight
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    fan_in, fan_out = 512 * 9, 512 * 9
    expected = math.sqrt(2.0 / (fan_in + fan_out))
    w = conv.weight.detach()
    assert abs(w.std().item() - expected) / expected < 0.01
    assert abs(w.mean().item()) < 0.01 * expected
    # Linear: fc1 of lenet300_100
    fc1 = build_model("lenet300_100", 10, 1, 28).fc1.weight.detach()
    expected = math.sqrt(2.0 / (784 + 300))
    assert abs(fc1.std().item() - expected) / expected < 0.02
    # resnet20 BN too
    for m in build_model("resnet20", 10, 3, 32).modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
