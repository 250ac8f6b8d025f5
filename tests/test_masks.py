"""Soft (CS) and hard masks: exactness at s0, gradients against plain autograd, temperature, clamp,
binary masks, state round-trip, detach, hard masks under SGD, errors, sparsity counts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.func import functional_call

from cs_repro import masks as masks_module
from cs_repro.errors import UserError
from cs_repro.masks import (
    HardMasks,
    SoftMasks,
    SparsityReport,
    aten_soft_masked_weight,
    default_prunable_names,
    plain_state_dict,
    sparsity_of,
)
from cs_repro.models import build_model, prunable_names
from cs_repro.train import OptimConfig, make_sgd


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def lenet(dtype=torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet300_100", 10, 1, 28).to(dtype)


def mnist_batch(n: int = 8, dtype=torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=generator, dtype=dtype), torch.randint(0, 10, (n,), generator=generator)


# --- the mask starts at exactly 1 ---------------------------------------------------------------


def test_lenet_outputs_unchanged_at_s0() -> None:
    model = lenet()
    x, _ = mnist_batch()
    dense = model(x)
    masks = SoftMasks.attach(model, prunable_names("lenet300_100", model), s0=0.0)
    assert masks.names == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert torch.equal(model(x), dense)  # sigmoid(0)/sigmoid(0) = 0.5 * 2 = 1 exactly
    for name, weight in zip(masks.names, masks.weights()):
        module = model.get_submodule(name.rpartition(".")[0])
        assert torch.equal(module.weight, weight)


@pytest.mark.parametrize("s0", [-0.1, 0.1, 1.0])
def test_effective_weight_at_other_s0_is_the_weight(s0: float) -> None:
    model = lenet()
    x, _ = mnist_batch()
    dense = model(x)
    masks = SoftMasks.attach(model, None, s0=s0)
    # float32 rounding of sigmoid(s0) vs the float64 scale: at most an ulp or two.
    for weight, part in zip(masks.weights(), masks.parts.values()):
        torch.testing.assert_close(part(weight), weight, rtol=3e-7, atol=0.0)
    torch.testing.assert_close(model(x), dense, rtol=1e-5, atol=1e-6)


def test_torchvision_resnet18_outputs_unchanged_at_s0() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(x)
    names = default_prunable_names(model)
    assert names == prunable_names(None, model)
    assert len(names) == 21 and names[0] == "conv1.weight" and names[-1] == "fc.weight"  # 20 convs + fc
    SoftMasks.attach(model, None, s0=0.0)
    with torch.no_grad():
        assert torch.equal(model(x), dense)


# --- gradients ----------------------------------------------------------------------------------


def test_function_gradcheck_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    logits = torch.randn(4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    for beta_value in (1.0, 3.7):
        beta = torch.tensor(beta_value, dtype=torch.float64)
        scale = 1.0 / sigmoid(-0.2)
        assert torch.autograd.gradcheck(
            lambda w, s: aten_soft_masked_weight(w, s, beta, scale, 0.0), (weight, logits), eps=1e-6, atol=1e-8
        )


def plain_masked(weight: torch.Tensor, logits: torch.Tensor, beta: float, s0: float) -> torch.Tensor:
    return weight * torch.sigmoid(beta * logits) / sigmoid(s0)


@pytest.mark.parametrize("beta_as_tensor", [False, True], ids=["cpu-number-path", "tensor-path"])
def test_function_matches_plain_autograd(monkeypatch, beta_as_tensor: bool) -> None:
    """Values and both gradients, including the fused penalty term, against plain ops."""
    if beta_as_tensor:  # the path used off the CPU, where beta is never read back
        monkeypatch.setattr(masks_module, "_beta_number", lambda beta: None)
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(6, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    logits = (0.3 * torch.randn(6, 7, dtype=torch.float64, generator=generator)).requires_grad_()
    grad_out = torch.randn(6, 7, dtype=torch.float64, generator=generator)
    beta, s0, lam = 5.0, -0.1, 0.37
    out = aten_soft_masked_weight(weight, logits, torch.tensor(beta, dtype=torch.float64), 1 / sigmoid(s0), lam)
    grad_w, grad_s = torch.autograd.grad(out, (weight, logits), grad_out)

    w2, s2 = weight.detach().clone().requires_grad_(), logits.detach().clone().requires_grad_()
    ref = plain_masked(w2, s2, beta, s0)
    penalty = (torch.sigmoid(beta * s2) / sigmoid(s0)).sum()
    ref_w, ref_s = torch.autograd.grad((ref * grad_out).sum() + lam * penalty, (w2, s2))
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(grad_w, ref_w, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(grad_s, ref_s, rtol=1e-12, atol=1e-15)


def test_fused_penalty_gradient_equals_autograd_of_ce_plus_penalty() -> None:
    model = lenet(torch.float64)
    reference = copy.deepcopy(model)
    x, y = mnist_batch(dtype=torch.float64)
    s0, beta, lam = 0.0, 7.0, 1e-3
    masks = SoftMasks.attach(model, None, s0=s0)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for logit in masks.logits():
            logit.copy_(0.2 * torch.randn(logit.shape, generator=generator, dtype=torch.float64))
    masks.set_temperature(beta)
    masks.fuse_penalty(lam)
    F.cross_entropy(model(x), y).backward()  # the penalty's gradient comes from the fused backward

    # The same loss with plain ops on a mask-free copy: effective weights fed through functional_call.
    weights = {n: p.detach().clone().requires_grad_() for n, p in reference.named_parameters()}
    logits = {n: s.detach().clone().requires_grad_() for n, s in zip(masks.names, masks.logits())}
    effective = dict(weights)
    for name in masks.names:
        effective[name] = plain_masked(weights[name], logits[name], beta, s0)
    penalty = sum((torch.sigmoid(beta * s) / sigmoid(s0)).sum() for s in logits.values())
    loss = F.cross_entropy(functional_call(reference, effective, (x,)), y) + lam * penalty
    loss.backward()

    assert penalty.item() == pytest.approx(masks.penalty_value(), abs=0.05)  # logged value is rounded to 0.1
    for name, weight in zip(masks.names, masks.weights()):
        torch.testing.assert_close(weight.grad, weights[name].grad, rtol=1e-11, atol=1e-14)
    for name, logit in zip(masks.names, masks.logits()):
        assert logit.grad.abs().max() > 0
        torch.testing.assert_close(logit.grad, logits[name].grad, rtol=1e-11, atol=1e-14)
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            torch.testing.assert_close(param.grad, weights[name].grad, rtol=1e-11, atol=1e-14)


def test_unfused_penalty_is_differentiable_and_equals_the_fused_one() -> None:
    model = lenet(torch.float64)
    x, y = mnist_batch(dtype=torch.float64)
    masks = SoftMasks.attach(model, None, s0=-0.05)
    masks.set_temperature(3.0)
    twin = copy.deepcopy(model)
    twin_masks = SoftMasks(twin, masks.names, {n: twin.get_submodule(n.rpartition(".")[0]).parametrizations.weight[0]
                                              for n in masks.names})
    lam = 1e-2
    (F.cross_entropy(model(x), y) + lam * masks.penalty()).backward()
    twin_masks.fuse_penalty(lam)
    F.cross_entropy(twin(x), y).backward()
    for a, b in zip(masks.logits(), twin_masks.logits()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-16)


# --- temperature, clamp, binary masks -----------------------------------------------------------


def test_set_temperature_changes_the_effective_weight() -> None:
    model = lenet()
    s0 = -0.1
    masks = SoftMasks.attach(model, ["fc2.weight"], s0=s0)
    part = masks.parts["fc2.weight"]
    with torch.no_grad():
        part.logits.copy_(torch.linspace(-0.5, 0.5, part.logits.numel()).view_as(part.logits))
    for beta in (1.0, 10.0, 200.0):
        masks.set_temperature(beta)
        assert isinstance(part.beta, torch.Tensor) and "beta" in dict(part.named_buffers())
        assert masks.temperature == beta
        expected = masks.weights()[0] * torch.sigmoid(beta * part.logits) / sigmoid(s0)
        torch.testing.assert_close(model.fc2.weight, expected, rtol=1e-6, atol=1e-7)


def test_clamp_logits_paper_and_released_arithmetic() -> None:
    from cs_repro.methods.cs import clamp_between_rounds

    values = torch.tensor([-1.0, 0.001, 0.5, 0.1])
    s0, beta_final = 0.1, 200.0
    results = {}
    for rule in ("paper", "released"):
        masks = SoftMasks.attach(nn.Linear(2, 2), ["weight"], s0=s0)
        with torch.no_grad():
            masks.logits()[0].copy_(values.view(2, 2))
        clamp_between_rounds(masks, s0, beta_final, rule)
        results[rule] = masks.logits()[0].detach().flatten()
    # paper: min(beta_T * s, s0); released: min(s, s0)
    torch.testing.assert_close(results["paper"], torch.tensor([-200.0, 0.1, 0.1, 0.1]))
    torch.testing.assert_close(results["released"], torch.tensor([-1.0, 0.001, 0.1, 0.1]))
    masks = SoftMasks.attach(nn.Linear(2, 2), ["weight"], s0=0.0)
    with torch.no_grad():
        masks.logits()[0].copy_(values.view(2, 2))
    masks.clamp_logits(multiply_by=3.0)  # no upper bound
    torch.testing.assert_close(masks.logits()[0].flatten(), 3.0 * values)


def test_binary_masks_are_positive_logits() -> None:
    model = lenet()
    masks = SoftMasks.attach(model, None, s0=0.0)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for logit in masks.logits():
            logit.copy_(torch.randn(logit.shape, generator=generator))
        masks.logits()[0][0, :3] = 0.0  # s == 0 is pruned
    binary = masks.binary_masks()
    assert list(binary) == masks.names
    for (name, mask), logit in zip(binary.items(), masks.logits()):
        assert mask.dtype == torch.bool and torch.equal(mask, logit > 0)
    assert not binary["fc1.weight"][0, :3].any()


# --- state, detach ------------------------------------------------------------------------------


def test_state_dict_round_trips_through_torch_save(tmp_path) -> None:
    model = lenet()
    masks = SoftMasks.attach(model, None, s0=0.0)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for logit in masks.logits():
            logit.copy_(torch.randn(logit.shape, generator=generator))
    masks.set_temperature(12.5)
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "masks": masks.state_dict()}, path)

    fresh = lenet(seed=99)
    fresh_masks = SoftMasks.attach(fresh, None, s0=0.0)
    state = torch.load(path, weights_only=True)
    fresh.load_state_dict(state["model"])
    assert fresh_masks.temperature == 12.5  # beta travels in the model's state_dict
    x, _ = mnist_batch()
    assert torch.equal(fresh(x), model(x))
    fresh_masks.load_state_dict(state["masks"])
    assert torch.equal(fresh(x), model(x))

    plain = plain_state_dict(model)
    assert sorted(plain) == sorted(n for n, _ in lenet().named_parameters())
    assert torch.equal(plain["fc1.weight"], masks.weights()[0])


def test_detach_leaves_the_raw_weights() -> None:
    model = lenet()
    masks = SoftMasks.attach(model, None, s0=0.0)
    raw = [w.detach().clone() for w in masks.weights()]
    with torch.no_grad():
        for logit in masks.logits():
            logit.fill_(-3.0)
    masks.set_temperature(50.0)
    assert model.fc1.weight.abs().max() < 1e-10  # masked to ~0 while attached
    masks.detach()
    assert sorted(n for n, _ in model.named_parameters()) == sorted(n for n, _ in lenet().named_parameters())
    for name, weight in zip(masks.names, raw):
        module = model.get_submodule(name.rpartition(".")[0])
        assert type(module) is nn.Linear and isinstance(module.weight, nn.Parameter)
        assert torch.equal(module.weight, weight)
    SoftMasks.attach(model, None, s0=0.0)  # can attach again after detaching


# --- hard masks ---------------------------------------------------------------------------------


def test_hard_masks_stay_exactly_zero_under_sgd() -> None:
    model = lenet()
    x, y = mnist_batch(32)
    generator = torch.Generator().manual_seed(6)
    masks = {
        name: torch.rand(param.shape, generator=generator) < 0.5
        for name, param in model.named_parameters()
        if name in prunable_names("lenet300_100", model)
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hard = HardMasks.apply(model, masks)
    optimizer = make_sgd(list(model.parameters()), 0.1, OptimConfig())  # momentum 0.9, Nesterov, wd 1e-4
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]
    assert optimizer.defaults["weight_decay"] == 1e-4
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
        kept = params[name][mask]
        moved = kept != before[name][mask]
        assert moved.float().mean() > 0.9, name
    assert not torch.equal(params["fc1.bias"], before["fc1.bias"])  # unmasked tensors train normally
    hard.remove()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    assert (params["fc1.weight"].grad[~masks["fc1.weight"]] != 0).any()  # hooks gone


def test_hard_masks_scale_the_kept_weights() -> None:
    layer = nn.Linear(3, 2)
    weight = layer.weight.detach().clone()
    mask = torch.tensor([[True, False, True], [False, True, True]])
    hard = HardMasks.apply(layer, {"weight": mask}, scale=2.0)
    torch.testing.assert_close(layer.weight.detach(), weight * mask * 2.0)
    assert torch.equal(hard.masks["weight"], mask)


def _released_reference_steps(layer0: nn.Linear, head0: nn.Linear, mask: torch.Tensor, c: float,
                              x: torch.Tensor, y: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The released code's ticket retraining written from its definition: W is the parameter and every
    forward computes with c * m * W. Returns the effective weight c * m * W after each step."""
    weight = nn.Parameter(layer0.weight.detach().clone())
    bias = nn.Parameter(layer0.bias.detach().clone())
    head = copy.deepcopy(head0)
    float_mask = mask.to(weight.dtype)
    optimizer = make_sgd([weight, bias, *head.parameters()], 0.1, OptimConfig())  # Nesterov, wd 1e-4
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        hidden = torch.relu(F.linear(x, c * float_mask * weight, bias))
        F.cross_entropy(head(hidden), y).backward()
        optimizer.step()
        trajectory.append((c * float_mask * weight).detach().clone())
    return trajectory


@pytest.mark.parametrize("s0", [0.0, -0.3])
def test_released_mask_scale_retraining_is_the_authors_procedure(s0: float) -> None:
    # BN-free: nothing downstream renormalises the scale, so a wrong procedure shows in full.
    torch.manual_seed(3)
    layer0, head0 = nn.Linear(12, 16).double(), nn.Linear(16, 4).double()
    mask = torch.rand(16, 12, generator=torch.Generator().manual_seed(4)) < 0.5
    x = torch.randn(32, 12, dtype=torch.float64)
    y = torch.randint(0, 4, (32,))
    c = 1.0 / sigmoid(s0)
    reference = _released_reference_steps(layer0, head0, mask, c, x, y, steps=5)

    def our_steps(scale: float) -> list[torch.Tensor]:
        model = nn.Sequential(copy.deepcopy(layer0), nn.ReLU(), copy.deepcopy(head0))
        HardMasks.apply(model, {"0.weight": mask}, scale=scale)
        optimizer = make_sgd(list(model.parameters()), 0.1, OptimConfig())
        start = model[0].weight.detach().clone()
        trajectory = [start]
        for _ in range(5):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            trajectory.append(model[0].weight.detach().clone())
        return trajectory

    ours = our_steps(c)
    start = ours[0]
    for step, (mine, theirs) in enumerate(zip(ours[1:], reference), start=1):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14, msg=f"step {step}")
    first_reference_move = (reference[0] - start).norm()
    assert float((ours[1] - start).norm() / first_reference_move) == pytest.approx(1.0, rel=1e-12)
    # Scaling the weights once and then training under a plain mask (what this project did before) is
    # another procedure: at s0 = 0 its first effective-weight step is far shorter than the authors'.
    if s0 == 0.0:
        plain_after_scaling = nn.Sequential(copy.deepcopy(layer0), nn.ReLU(), copy.deepcopy(head0))
        HardMasks.apply(plain_after_scaling, {"0.weight": mask}, scale=c).remove()
        HardMasks.apply(plain_after_scaling, {"0.weight": mask}, weights_scaled=True)
        optimizer = make_sgd(list(plain_after_scaling.parameters()), 0.1, OptimConfig())
        F.cross_entropy(plain_after_scaling(x), y).backward()
        optimizer.step()
        ratio = float(first_reference_move / (plain_after_scaling[0].weight.detach() - start).norm())
        assert ratio > 3.0  # ~c**2 = 4 (weight decay and momentum make it not exactly 4)


def test_hard_masks_resume_keeps_weights_and_scales_gradients() -> None:
    layer = nn.Linear(3, 2).double()
    mask = torch.tensor([[True, False, True], [False, True, True]])
    weight = layer.weight.detach().clone()
    HardMasks.apply(layer, {"weight": mask}, scale=2.0, weights_scaled=True)
    assert torch.equal(layer.weight.detach(), weight)  # a resume: the checkpoint's weights are used as they are
    layer(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(layer.weight.grad, 4.0 * mask.double())  # d(sum)/dW = 1, times c**2 and the mask


def test_mask_errors_are_user_errors() -> None:
    model = lenet()
    with pytest.raises(UserError, match="shape"):
        HardMasks.apply(model, {"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(UserError, match="fc9.weight"):
        HardMasks.apply(model, {"fc9.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(UserError, match="fc9.weight"):
        SoftMasks.attach(model, ["fc9.weight"])
    with pytest.raises(UserError, match="nothing"):
        SoftMasks.attach(model, ["fc1.nothing"])
    with pytest.raises(UserError):
        SoftMasks.attach(model, [])
    SoftMasks.attach(model, ["fc1.weight"])
    with pytest.raises(UserError, match="already"):
        SoftMasks.attach(model, ["fc1.weight"])


def test_sparsity_of_counts() -> None:
    masks = {
        "a": torch.tensor([[True, False], [False, False]]),
        "b": torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0]),
    }
    report = sparsity_of(masks)
    assert isinstance(report, SparsityReport)
    assert (report.total, report.remaining) == (10, 5)
    assert report.per_layer == {"a": (1, 4), "b": (4, 6)}
    assert report.remaining_weights == 0.5 and report.sparsity == 0.5
    assert report.layer_remaining() == {"a": 0.25, "b": 4 / 6}
    assert sparsity_of({}).remaining_weights == 1.0
