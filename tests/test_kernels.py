"""The fused CPU soft-mask kernel: values and gradients against float64 formulas, the same bits for any
thread count, the same training as the ATen path, and clear behaviour when it cannot be built."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cs_repro import kernels
from cs_repro.errors import UserError
from cs_repro.masks import SoftMasks, _SoftMaskedWeight
from cs_repro.models import build_model, prunable_names

needs_kernel = pytest.mark.skipif(
    not kernels.fused_soft_mask_available(), reason="the fused kernel did not build here (no C++ compiler?)"
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reference(weight, logits, grad_out, beta, scale, lam):
    """out, grad_weight, grad_logits in float64 from the closed forms."""
    w, s, g_out = weight.double(), logits.double(), grad_out.double()
    gate = torch.sigmoid(beta * s)
    out = scale * w * gate
    grad_w = scale * g_out * gate
    grad_s = beta * scale * (g_out * w + lam) * gate * (1 - gate)
    return out, grad_w, grad_s


def fused(weight, logits, grad_out, beta, scale, lam):
    w = weight.clone().requires_grad_()
    s = logits.clone().requires_grad_()
    out = torch.ops.cs_repro.soft_masked_weight(w, s, beta, scale, lam)
    grad_w, grad_s = torch.autograd.grad(out, (w, s), grad_out)
    return out.detach(), grad_w, grad_s


# 40_003 elements: split across threads (grain 16384) and not a multiple of any vector width.
@needs_kernel
@pytest.mark.parametrize("shape", [(7,), (300, 100), (40_003,)], ids=["tiny", "fc2", "odd-large"])
@pytest.mark.parametrize("beta", [1.0, 13.7, 200.0])
def test_fused_kernel_matches_the_formulas(shape, beta) -> None:
    generator = torch.Generator().manual_seed(len(shape) + int(beta))
    weight = torch.randn(shape, generator=generator)
    logits = 0.5 * torch.randn(shape, generator=generator)  # beta*s spans saturated and linear regions
    grad_out = torch.randn(shape, generator=generator)
    scale, lam = 1 / sigmoid(0.02), 0.3
    out, grad_w, grad_s = fused(weight, logits, grad_out, beta, scale, lam)
    ref_out, ref_w, ref_s = reference(weight, logits, grad_out, beta, scale, lam)
    # float32 arithmetic against float64 formulas: a few ulp relative to each term's size
    torch.testing.assert_close(out.double(), ref_out, rtol=3e-6, atol=1e-7)
    torch.testing.assert_close(grad_w.double(), ref_w, rtol=3e-6, atol=1e-7)
    torch.testing.assert_close(grad_s.double(), ref_s, rtol=1e-5, atol=2e-6 * beta * scale)


@needs_kernel
def test_fused_kernel_extreme_logits_stay_finite() -> None:
    logits = torch.tensor([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4])
    weight = torch.ones_like(logits)
    out, grad_w, grad_s = fused(weight, logits, torch.ones_like(logits), 50.0, 2.0, 1e-8)
    assert torch.isfinite(out).all() and torch.isfinite(grad_w).all() and torch.isfinite(grad_s).all()
    assert out[0] == 0.0 and out[-1] == 2.0 and out[3] == 1.0  # sigmoid -> 0, 1, and exactly 1/2 at 0
    assert grad_s[0] == 0.0 and grad_s[-1] == 0.0


@needs_kernel
def test_fused_kernel_gives_the_same_bits_for_any_thread_count() -> None:
    """Elements land in vector bodies or scalar tails depending on where threads split the range;
    both must compute the same bits, or results would depend on the machine's core count."""
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(50_001, generator=generator)
    logits = torch.randn(50_001, generator=generator)
    grad_out = torch.randn(50_001, generator=generator)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(fused(weight, logits, grad_out, 7.3, 1.9, 1e-3))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_kernel
def test_fused_kernel_skips_gradients_nobody_needs() -> None:
    weight = torch.randn(5, 3)
    logits = torch.randn(5, 3, requires_grad=True)
    out = torch.ops.cs_repro.soft_masked_weight(weight, logits, 2.0, 1.0, 0.0)
    (grad_s,) = torch.autograd.grad(out.sum(), (logits,))
    _, _, ref_s = reference(weight, logits.detach(), torch.ones(5, 3), 2.0, 1.0, 0.0)
    torch.testing.assert_close(grad_s.double(), ref_s, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(torch.ops.cs_repro.soft_masked_weight(weight, logits, 2.0, 1.0, 0.0), out.detach())


@needs_kernel
def test_fused_kernel_rejects_what_it_cannot_do() -> None:
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.cs_repro.soft_masked_weight(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                                              1.0, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="shape"):
        torch.ops.cs_repro.soft_masked_weight(torch.ones(3), torch.ones(4), 1.0, 1.0, 0.0)


def _cs_steps(steps: int = 5) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A few CS training steps of LeNet-300-100 on fixed random data; losses and final logits."""
    torch.manual_seed(0)
    model = build_model("lenet300_100", 10, 1, 28)
    masks = SoftMasks.attach(model, prunable_names("lenet300_100", model), s0=0.0)
    masks.set_temperature(4.0)
    masks.fuse_penalty(1e-4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, masks.state_dict()


@needs_kernel
def test_soft_masks_train_the_same_with_the_fused_kernel_and_aten_ops(monkeypatch) -> None:
    fused_losses, fused_logits = _cs_steps()
    monkeypatch.setenv(kernels.KERNEL_ENV, "aten")
    aten_losses, aten_logits = _cs_steps()
    assert fused_losses[-1] < fused_losses[0]  # it trains
    assert fused_losses == pytest.approx(aten_losses, rel=1e-4)
    for name in fused_logits:
        assert not torch.equal(fused_logits[name], torch.zeros_like(fused_logits[name]))
        torch.testing.assert_close(fused_logits[name], aten_logits[name], rtol=1e-3, atol=1e-5)


def test_soft_masks_on_the_cpu_use_the_fused_kernel_when_it_is_there(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("cs_repro.masks.fused_soft_mask_available", lambda: calls.append(1) or False)
    applied = []
    original = _SoftMaskedWeight.apply
    monkeypatch.setattr(_SoftMaskedWeight, "apply", lambda *args: applied.append(1) or original(*args))
    model = build_model("lenet300_100", 10, 1, 28)
    SoftMasks.attach(model, prunable_names("lenet300_100", model), s0=0.0)
    model(torch.zeros(2, 1, 28, 28))
    assert len(calls) == 3 and len(applied) == 3  # asked once per masked tensor, ATen path taken


def test_kernel_mode_errors_and_fallback(monkeypatch, caplog) -> None:
    monkeypatch.setenv(kernels.KERNEL_ENV, "fast")
    with pytest.raises(UserError, match="CS_REPRO_MASK_KERNEL='fast'.*auto, fused or aten"):
        kernels.fused_soft_mask_available()

    def broken_build() -> None:
        raise RuntimeError("Error building extension 'cs_repro_soft_mask'\ng++: not found")

    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setattr(kernels, "_load", broken_build)
    monkeypatch.setenv(kernels.KERNEL_ENV, "fused")
    with pytest.raises(UserError, match="CS_REPRO_MASK_KERNEL=fused but the kernel could not be built: "
                                        "RuntimeError: g\\+\\+: not found"):
        kernels.fused_soft_mask_available()

    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv(kernels.KERNEL_ENV, "auto")
    with caplog.at_level(logging.WARNING, logger="cs_repro"):
        assert kernels.fused_soft_mask_available() is False
        assert kernels.fused_soft_mask_available() is False
    assert [r.message for r in caplog.records].count(
        "fused soft-mask kernel unavailable (RuntimeError: g++: not found); using ATen ops (slower on CPU)") == 1
    # and masks still work, through ATen
    model = build_model("lenet300_100", 10, 1, 28)
    dense = model(torch.ones(1, 784))
    SoftMasks.attach(model, None, s0=0.0)
    assert torch.equal(model(torch.ones(1, 784)), dense)


def test_kernel_cache_is_keyed_and_relocatable(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "k"))
    first = kernels.build_directory()
    assert first.parent == tmp_path / "k"
    monkeypatch.setattr(kernels, "CFLAGS", [*kernels.CFLAGS, "-DOTHER"])
    assert kernels.build_directory() != first  # other flags, other build
    monkeypatch.delenv(kernels.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernels.build_directory().parent == tmp_path / "xdg" / "cs_repro" / "kernels"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("cs-repro")), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@needs_kernel
def test_build_kernel_command_reports_where_the_kernel_is() -> None:
    result = _cli("build-kernel")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fused soft-mask kernel ready: {kernels.build_directory()}"


def test_build_kernel_command_errors_are_one_line() -> None:
    off = _cli("build-kernel", CS_REPRO_MASK_KERNEL="aten")
    assert off.returncode == 0 and "switched off" in off.stdout
    bad = _cli("build-kernel", CS_REPRO_MASK_KERNEL="fastest")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: CS_REPRO_MASK_KERNEL='fastest' is not a mask kernel; "
                                               "use auto, fused or aten"]


def test_soft_masks_work_under_torch_func_and_torch_compile() -> None:
    """The fused op's autograd is C++ (opaque to functorch and dynamo): there the ATen path takes over."""
    from torch.func import functional_call, grad

    torch.manual_seed(0)
    model = build_model("lenet300_100", 10, 1, 28)
    masks = SoftMasks.attach(model, prunable_names("lenet300_100", model), s0=0.0)
    masks.set_temperature(3.0)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for logit in masks.logits():
            logit.copy_(torch.randn(logit.shape, generator=generator))
    x = torch.randn(8, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (8,), generator=generator)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    functional = grad(loss)(params)
    F.cross_entropy(model(x), y).backward()  # eager: the fused kernel where it is built
    for name, param in model.named_parameters():
        torch.testing.assert_close(functional[name], param.grad, rtol=1e-4, atol=1e-6)

    compiled = torch.compile(model, backend="eager")  # dynamo tracing only; no C++ compiler involved
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
