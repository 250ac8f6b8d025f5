"""ImageNet streamed from disk: a tiny ImageFolder tree of real JPEGs through `prepare`'s checks and index, the
real DataLoader (worker processes) and torchvision's transforms, and ResNet-50."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import stage_command
from fixtures import write_image_folder


def _params(root: Path, **network) -> dict:
    net = {"model": "resnet50", "dataset": "imagenet", "val_size": 8, "batch_size": 8, "epochs": 1, "lr": 0.05,
           "rewind_epoch": 0, "image_size": 32, "max_batches": 2, **network}
    return {"profile": "test", "data": {"root": str(root), "workers": 2}, "networks": {"resnet50": net},
            "sweep": {"datasets": ["imagenet"], "networks": ["resnet50"], "seeds": [0], "s0": [0.0]},
            "baselines": {"networks": []}, "imp_c": {"networks": []}, "slimming": {"networks": []},
            "sensitivity": {"networks": []}}


def _prepare(workspace: Path, root: Path) -> tuple[int, str]:
    (workspace / "params.yaml").write_text(yaml.safe_dump(_params(root)))
    result = CliRunner().invoke(stage_command("prepare"), ["imagenet", "--params", "params.yaml"])
    return result.exit_code, result.output


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_image_folder(tmp_path / "imagenet")


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_prepare_writes_an_index_of_the_tree(tree, here):
    code, output = _prepare(here, tree)
    assert code == 0, output
    index = torch.load(here / "data" / "prepared" / "imagenet.pt", weights_only=True)
    assert index["classes"] == [f"n{1440764 + c:08d}" for c in range(4)]
    assert len(index["train_files"]) == 48 and len(index["test_files"]) == 16
    assert index["train_files"][0] == "train/n01440764/n01440764_0.JPEG"  # the PNG named .JPEG is accepted
    assert index["train_labels"].tolist() == [c for c in range(4) for _ in range(12)]
    assert index["test_labels"].bincount().tolist() == [4, 4, 4, 4]
    assert Path(index["root"]) == tree.resolve()


@pytest.mark.parametrize("damage, expected", [
    (lambda t: __import__("shutil").rmtree(t / "val"), "has no val/ folder"),
    (lambda t: [p.unlink() for p in (t / "train" / "n01440766").iterdir()], "train/n01440766 holds no images"),
    (lambda t: (t / "val" / "n01440767").rename(t / "val" / "n09999999"), "val has n09999999, which train/ lacks"),
    (lambda t: (t / "train" / "n01440765" / "n01440765_3.JPEG").write_bytes(
        (t / "train" / "n01440765" / "n01440765_3.JPEG").read_bytes()[:600]),
     "train/n01440765/n01440765_3.JPEG is truncated (no JPEG end marker in its last 4 KiB)"),
    (lambda t: (t / "val" / "n01440764" / "n01440764_1.JPEG").write_bytes(b"<html>not found</html>"),
     "val/n01440764/n01440764_1.JPEG is not a JPEG or PNG image"),
])
def test_a_malformed_tree_is_one_line_naming_what_is_wrong(tree, here, damage, expected):
    damage(tree)
    code, output = _prepare(here, tree)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: imagenet: "), output
    assert expected in lines[0]
    assert not (here / "data" / "prepared" / "imagenet.pt").exists()


def test_a_missing_root_says_so(here, tmp_path):
    code, output = _prepare(here, tmp_path / "nowhere")
    assert code == 2 and "does not exist" in output and len(output.strip().splitlines()) == 1


def _sources(tree: Path, workers: int, shard=(0, 1), batch_size: int = 8, train: bool = True):
    from cs_repro.data.registry import IMAGENET_MEAN, IMAGENET_STD
    from cs_repro.data.streaming import StreamedBatches
    from cs_repro.data.imagenet import IMAGENET

    index = IMAGENET.index(IMAGENET, tree)
    key = "train" if train else "test"
    return StreamedBatches(tree, index[f"{key}_files"], index[f"{key}_labels"], batch_size, IMAGENET_MEAN,
                           IMAGENET_STD, train=train, crop=32, workers=workers, device=torch.device("cpu"), shard=shard)


def _epoch(source, seed: int | None):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [(x.clone(), y.clone()) for x, y in source.batches(generator)]


def test_streamed_batches_are_the_same_for_any_worker_count_and_split_over_processes(tree):
    single = _epoch(_sources(tree, workers=0), 5)
    assert len(single) == 6 and single[0][0].shape == (8, 3, 32, 32) and single[0][0].dtype == torch.float32
    # normalised with ImageNet's statistics: roughly zero-centred, not 0..255
    assert -3 < float(single[0][0].mean()) < 3
    with_workers = _epoch(_sources(tree, workers=2), 5)
    for (x1, y1), (x2, y2) in zip(single, with_workers, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # two processes: rank r takes half r of every global batch (order and crops drawn as for one process)
    halves = [_epoch(_sources(tree, workers=1, shard=(rank, 2)), 5) for rank in (0, 1)]
    for k, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([halves[0][k][0], halves[1][k][0]]), x)
        assert torch.equal(torch.cat([halves[0][k][1], halves[1][k][1]]), y)
    # another epoch seed: another order and other crops
    other = _epoch(_sources(tree, workers=0), 6)
    assert not torch.equal(other[0][0], single[0][0])
    # evaluation: every image once, in order, centre crops (no randomness)
    test = _epoch(_sources(tree, workers=2, train=False), None)
    assert torch.cat([y for _, y in test]).tolist() == [c for c in range(4) for _ in range(4)]
    again = _epoch(_sources(tree, workers=0, train=False), None)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(test, again, strict=True))


def test_resnet50_trains_on_the_stream_and_an_undecodable_image_is_one_line(tree, here):
    from cs_repro.models import build_model, prunable_names

    model = build_model("resnet50", 1000, 3, 224)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    names = prunable_names("resnet50", model)
    sizes = dict(model.named_parameters())
    assert len(names) == 54 and sum(sizes[n].numel() for n in names) == 25_502_912

    assert _prepare(here, tree)[0] == 0
    (here / "whole.yaml").write_text(yaml.safe_dump(_params(tree, max_batches=0)))  # every image is read
    runner = CliRunner()
    result = runner.invoke(stage_command("magnitude_dense"), ["--network", "resnet50", "--seed", "0", "--out", "dense",
                                                              "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = yaml.safe_load((here / "dense" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and 0.0 <= metrics["final"]["test_accuracy"] <= 1.0

    # a file that passes prepare's first look but does not decode: the worker reports it, the run says it
    broken = tree / "train" / "n01440767" / "n01440767_5.JPEG"
    broken.write_bytes(broken.read_bytes()[:400] + b"\xff\xd9")  # cut short, end marker kept
    result = runner.invoke(stage_command("magnitude_dense"), ["--network", "resnet50", "--seed", "0", "--out", "again",
                                                              "--device", "cpu", "--params", "whole.yaml"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot decode {broken} ("), result.output
    assert "Traceback" not in result.output


def test_too_little_shared_memory_for_the_imagenet_workers_is_one_line_before_the_run(monkeypatch):
    """Docker's default /dev/shm (64 MB) would end an ImageNet run hours in with a bus error in a worker."""
    from types import SimpleNamespace

    from conftest import REPO
    from cs_repro.params import params_from_dict
    from cs_repro.profiles import compose_profile
    from cs_repro_orchestration import preflight

    imagenet = params_from_dict(compose_profile("imagenet", ["data.root=/data/imagenet"], conf_dir=REPO / "conf"))
    quick = params_from_dict(compose_profile("quick", conf_dir=REPO / "conf"))
    sizes = {"small": 64 << 20, "large": 16 << 30}
    monkeypatch.setattr(preflight.os, "statvfs", lambda path: SimpleNamespace(f_frsize=4096,
                                                                               f_blocks=sizes[path] // 4096))
    # 8 workers x 2 batches ahead x 1,024 crops of 224 x 224 x 3 bytes (2,352 MB), 8 x 128 MB, x 1.5
    assert preflight.shared_memory_needed(imagenet, "resnet50") == int(1.5 * (8 * 2 * 1024 * 150528 + 8 * (128 << 20)))
    assert preflight.shared_memory_problem(imagenet, True, "small") == (
        "small holds 64 MB; a resnet50 run needs about 5,064 MB there for its DataLoader workers and processes: add "
        "--ipc=host (or --shm-size=16g) to `docker run`")
    assert preflight.shared_memory_problem(imagenet, True, "large") is None
    assert preflight.shared_memory_problem(quick, True, "small") is None  # one process, in memory: no need
