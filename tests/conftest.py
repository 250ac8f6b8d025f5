"""Shared fixtures: a workspace with prepared Fashion-MNIST (the real files from Debian's package),
and small params for fast runs on it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def stage_command(name: str):
    """The app of stages/<name>.py (its one command), for typer's CliRunner."""
    import importlib.util

    import inspect

    from cs_repro.stage_cli import stage_app, training_stage

    spec = importlib.util.spec_from_file_location(f"stages_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    command = getattr(module, name)
    return stage_app(training_stage(command) if "training" in inspect.signature(command).parameters else command)


@pytest.fixture(scope="session")
def prepared_fashion(tmp_path_factory) -> Path:
    """data/prepared/fashion_mnist.pt built once from the real Debian files."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist (.ci/run does it)")
    from cs_repro.data.prepared import prepare_dataset
    from cs_repro.params import params_from_dict

    root = tmp_path_factory.mktemp("prepared")
    out = root / "data" / "prepared" / "fashion_mnist.pt"
    prepare_dataset(params_from_dict(tiny_params_dict()), "fashion_mnist", out)
    return out


@pytest.fixture
def workspace(tmp_path, prepared_fashion, monkeypatch) -> Path:
    """A working directory whose data/prepared holds Fashion-MNIST; runs happen relative to it."""
    target = tmp_path / "data" / "prepared"
    target.mkdir(parents=True)
    (target / "fashion_mnist.pt").symlink_to(prepared_fashion)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    return tmp_path


def tiny_params_dict(**network_overrides) -> dict:
    """LeNet-300-100 on 2,000 Fashion-MNIST images: a CS search of 3 rounds x 3 epochs takes ~1 s."""
    network = {
        "model": "lenet300_100", "dataset": "fashion_mnist", "train_subset": 2000, "test_subset": 1000,
        "val_size": 500, "batch_size": 100, "epochs": 3, "lr": 0.05, "lr_milestones": [2], "rewind_epoch": 1,
    }
    network.update(network_overrides)
    return {
        "profile": "test",
        "lambda": 1e-8,
        "networks": {"lenet300_100": network},
        "cs": {"rounds": 3, "beta_final": 200.0},
        "imp": {"prune_fraction": 0.2, "levels": 3},
        "sweep": {"datasets": ["fashion_mnist"], "networks": ["lenet300_100"], "seeds": [0], "s0": [0.0]},
    }


@pytest.fixture
def tiny_params():
    from cs_repro.params import params_from_dict

    def make(overrides: dict | None = None, **network_overrides):
        raw = copy.deepcopy(tiny_params_dict(**network_overrides))
        for key, value in (overrides or {}).items():
            raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
        return params_from_dict(raw)

    return make

