"""The training-protocol options the Frankle et al. profile needs (conf/profile/frankle.yaml): Kaiming-normal
weights and U(0, 1) BatchNorm scales, ImageNet normalisation, no validation split, and the rewind point in
iterations; each off by default, so the paper protocol is untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cs_repro.data import DATASETS
from cs_repro.data.registry import IMAGENET_MEAN, IMAGENET_STD
from cs_repro.errors import UserError
from cs_repro.evaluation import collect_rows
from cs_repro.methods.cs import run_cs_search
from cs_repro.methods.magnitude import run_magnitude_dense
from cs_repro.models import apply_init, build_model
from cs_repro.report.rows import as_rows

CPU = torch.device("cpu")


def test_kaiming_normal_weights_and_uniform_batchnorm_scales():
    torch.manual_seed(0)
    model = apply_init(build_model("vgg16", 10, 3, 32), "kaiming_normal", "uniform")
    conv = model.features[10]  # 128 -> 128 channels, 3x3: fan_in 1152, ~147k weights
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.02)
    assert not conv.bias.any()
    scales = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert 0.0 <= scales.min() and scales.max() < 1.0 and 0.45 < scales.mean().item() < 0.55
    torch.manual_seed(0)
    again = apply_init(build_model("vgg16", 10, 3, 32), "kaiming_normal", "uniform")
    assert torch.equal(again.features[10].weight, conv.weight)  # the seed decides


def test_imagenet_normalisation_applies_to_colour_images_only():
    assert DATASETS.get("cifar10").normalization("imagenet") == (IMAGENET_MEAN, IMAGENET_STD)
    assert DATASETS.get("cifar10").normalization("dataset") == (DATASETS.get("cifar10").mean,
                                                               DATASETS.get("cifar10").std)
    with pytest.raises(UserError, match="does not apply to fashion_mnist"):
        DATASETS.get("fashion_mnist").normalization("imagenet")


def test_no_validation_split_trains_on_everything_and_records_no_validation_accuracy(workspace, tiny_params):
    params = tiny_params(val_size=0, train_subset=1500, epochs=2, lr_milestones=[1])
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "runs" / "cs", CPU, checkpoint_dir=None)
    metrics = json.loads((workspace / "runs" / "cs" / "metrics.json").read_text())
    assert all(epoch["val_accuracy"] is None for epoch in metrics["epochs"])
    assert all(epoch["train_accuracy"] > 0.5 for epoch in metrics["epochs"])  # the learning check read these
    (row,) = as_rows(collect_rows(params, workspace / "runs")[0])
    assert row.val_accuracy is None and 0.0 < row.test_accuracy <= 1.0


def test_rewind_at_the_last_iteration_of_an_epoch_is_the_rewind_at_that_epoch(workspace, tiny_params):
    small = dict(train_subset=1000, epochs=2, lr_milestones=[1], batch_size=100, rewind_epoch=1)
    steps_per_epoch = 1000 // 100
    by_epoch = tiny_params(**small)
    by_iteration = tiny_params(**{**small, "rewind_epoch": 0, "rewind_iteration": steps_per_epoch})
    earlier = tiny_params(**{**small, "rewind_epoch": 0, "rewind_iteration": 3})
    states = {}
    for name, params in (("epoch", by_epoch), ("iteration", by_iteration), ("earlier", earlier)):
        run_magnitude_dense(params, "lenet300_100", 0, workspace / name, CPU, checkpoint_dir=None)
        states[name] = torch.load(workspace / name / "dense.pt", weights_only=False)["rewind_state"]
    assert all(torch.equal(states["epoch"][k], states["iteration"][k]) for k in states["epoch"])
    assert not torch.equal(states["earlier"]["fc1.weight"], states["epoch"]["fc1.weight"])
    with pytest.raises(UserError, match="rewind_iteration=999 lies beyond the first round's 20 optimiser steps"):
        run_magnitude_dense(tiny_params(**{**small, "rewind_iteration": 999}), "lenet300_100", 0,
                            workspace / "beyond", CPU, checkpoint_dir=None)
