"""Ops dispatched per training step (benchmarks/op_counts.py): a GPU step is bound by kernel launches, so
the soft mask's extra ops are a budget. Counted, not timed: the counts are exact and machine-independent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _op_counts():
    spec = importlib.util.spec_from_file_location("op_counts", REPO / "benchmarks" / "op_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_mask_path_allocates_nothing_per_step_and_stays_within_its_op_budget():
    ops = _op_counts()
    dense, cs = ops.ops_per_step("resnet20", "dense"), ops.ops_per_step("resnet20", "cs")
    extra = cs - dense
    # no scalar or zero-gradient allocations per step (they were 76 of ResNet-20's extra ops)
    assert not {"zeros", "new_zeros", "new_full", "zeros_like"} & {name.split(".")[-1] for name in extra}
    assert sum(extra.values()) <= 10 * 19  # 19 masked convolutions: forward 3 ops, backward 5, one detach


def test_the_cpu_mask_path_costs_at_most_1_3_times_the_dense_step():
    from cs_repro.kernels import fused_soft_mask_available

    if not fused_soft_mask_available():
        pytest.skip("the fused CPU kernel did not build here")
    ops = _op_counts()
    for network in ("resnet20", "vgg16"):
        dense = sum(ops.ops_per_step(network, "dense", path="cpu").values())
        cs = sum(ops.ops_per_step(network, "cs", path="cpu").values())
        assert cs / dense <= 1.3, (network, cs, dense)
