"""The image itself, built and run here, as a user runs it (docker/README.md).

No image registry is reachable from this machine, so the base is a stand-in made locally from Debian's
packages (mmdebstrap, then `docker import`), carrying this machine's local CA certificates (its way out to
PyPI goes through a proxy that presents them); the Dockerfile takes it as `BASE_IMAGE` and keeps the CUDA
image as its default. The Docker engine is Debian's `docker.io`, installed with apt-get and started here
when it is missing and we are root; otherwise these tests skip, saying why.

Cost (docker/README.md has the measured numbers): on a fresh machine the engine, the base and the build
(mostly pip installing torch's CUDA wheels into the image); on the same machine again, Docker's layer cache
rebuilds only what changed since (the sources layer), and the runs dominate.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BASE = "cs-repro-base:bookworm"
IMAGE = "cs-repro:test"
DEBIAN = ["deb http://deb.debian.org/debian bookworm main", "deb http://deb.debian.org/debian bookworm-updates main",
          "deb http://deb.debian.org/debian-security bookworm-security main"]
LOCAL_CAS = Path("/usr/local/share/ca-certificates")

#: The quick profile shrunk to a test's size (the image is under test, not the methods). Big enough that a run's
#: checkpoint lives a few seconds: it exists only while the run trains, and the stop below waits for one.
TINY = [
    "networks.lenet300_100.train_subset=4000", "networks.lenet300_100.test_subset=300",
    "networks.lenet300_100.val_size=200", "networks.lenet300_100.epochs=2", "networks.lenet300_100.lr=0.05",
    "networks.lenet300_100.lr_milestones=[1]", "imp.levels=2", "controls.imp_levels=[2]", "sweep.networks=[lenet300_100]",
    "sweep.seeds=[0]", "sweep.s0=[0.0]", "baselines.networks=[]", "l0.penalties=[0.001]",
]
TINY_ARGS = [arg for override in TINY for arg in ("-S", override)]


def _run(*args: str, timeout: float = 1800, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def _engine_answers() -> bool:
    return shutil.which("docker") is not None and _run("docker", "info", check=False, timeout=60).returncode == 0


def _install(*packages: str) -> str | None:
    """apt-get install, as root; the reason it cannot, else None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{', '.join(packages)} missing, and installing Debian packages needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True, env=env,
                          timeout=900)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True, env=env,
                              timeout=900)
    return None if done.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {done.stderr[-300:]}"


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory) -> None:
    if _engine_answers():
        return
    if not shutil.which("dockerd"):
        reason = _install("docker.io")
        if reason:
            pytest.skip(reason)
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    subprocess.Popen(["dockerd"], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not _engine_answers():
        time.sleep(1)
    if not _engine_answers():
        pytest.skip(f"the Docker engine did not start: {log.read_text()[-500:]}")


@pytest.fixture(scope="session")
def stand_in_base(docker_engine, tmp_path_factory) -> str:
    """Debian bookworm (minbase) from Debian's packages, kept in the engine so a later run reuses it."""
    if _run("docker", "image", "inspect", BASE, check=False).returncode == 0:
        return BASE
    if not shutil.which("mmdebstrap"):
        reason = _install("mmdebstrap")
        if reason:
            pytest.skip(reason)
    tarball = tmp_path_factory.mktemp("base") / "bookworm.tar"
    hooks = [f"--customize-hook=copy-in {LOCAL_CAS} /usr/local/share"] if LOCAL_CAS.is_dir() else []
    made = _run("mmdebstrap", "--quiet", "--variant=minbase", *hooks, "bookworm", str(tarball), *DEBIAN, check=False)
    if made.returncode != 0:
        pytest.skip(f"mmdebstrap could not make the stand-in base (no Debian mirror?): {made.stderr[-500:]}")
    _run("docker", "import", str(tarball), BASE)
    return BASE


@pytest.fixture(scope="session")
def image(stand_in_base) -> dict:
    """The image built from this checkout (its .dockerignore'd working tree), as `make image` builds it."""
    commit = _run("git", "describe", "--always", "--dirty=+changes", "--abbrev=7", cwd=ROOT).stdout.strip()
    started = time.perf_counter()
    _run("docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={stand_in_base}",
         "--build-arg", f"CS_REPRO_COMMIT={commit}", "-t", IMAGE, str(ROOT), timeout=3600)
    return {"commit": commit, "build_seconds": time.perf_counter() - started}


def _volume(path: Path) -> Path:
    path.mkdir(parents=True)
    os.chown(path, 1000, 1000)  # the image runs as uid 1000
    return path


def _docker_run(*args: str, out: Path | None = None, name: str | None = None, check: bool = False,
                timeout: float = 1800) -> subprocess.CompletedProcess:
    volume = ["-v", f"{out}:/work/out"] if out else []
    named = ["--name", name] if name else []
    return _run("docker", "run", "--rm", "--network", "none", *named, *volume, *args, check=check, timeout=timeout)


def test_the_image_runs_a_profile_resumes_after_docker_stop_and_names_the_project_s_commit(image, tmp_path):
    straight = _volume(tmp_path / "straight")
    first = _docker_run("-e", "CS_REPRO_DEVICE=cpu", IMAGE, "quick", *TINY_ARGS, out=straight)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    logs = first.stdout + first.stderr
    assert "No file hash info" not in logs and "warning: nothing is mounted" not in logs
    assert "fan-out stages ran" in logs  # the parallel runner, as `make repro`
    report = (straight / "figures" / "REPORT.md").read_text()
    assert f"git commit {image['commit']}" in report  # the project's commit, not the image's own repository's
    status = _docker_run(IMAGE, "dvc", "status", out=straight, check=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    again = _docker_run("-e", "CS_REPRO_DEVICE=cpu", IMAGE, "quick", *TINY_ARGS, out=straight)
    assert again.returncode == 0 and "nothing to run" in again.stdout + again.stderr, again.stdout + again.stderr
    assert not _docker_run(IMAGE, "dvc", "exp", "list", out=straight, check=True).stdout.strip()  # none piled up

    # docker stop while a training stage runs, then the same command: the same bytes as the run above
    stopped = _volume(tmp_path / "stopped")
    name = f"cs-repro-test-{os.getpid()}"
    command = ["docker", "run", "--rm", "--network", "none", "--name", name, "-v", f"{stopped}:/work/out",
               "-e", "CS_REPRO_DEVICE=cpu", IMAGE, "quick", *TINY_ARGS]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = stopped / "workspace" / ".cache" / "checkpoints"
    # A finished run removes its checkpoint, so a poll can miss a run shorter than the poll; if the whole pipeline
    # ends unseen, say so at once rather than waiting out the deadline.
    deadline, training = time.monotonic() + 600, False
    while not training and time.monotonic() < deadline and running.poll() is None:
        training = any(checkpoints.glob("*.pt"))
        time.sleep(0 if training else 0.1)
    assert training, ("no checkpoint seen; the pipeline " + ("ended:\n" + running.communicate()[0][-3000:]
                                                             if running.poll() is not None else "is still running"))
    _run("docker", "stop", name, timeout=120)
    output = running.communicate(timeout=120)[0]
    assert running.returncode != 0 and "interrupted: progress up to the last finished epoch is kept" in output, output
    assert "Traceback" not in output
    # the stopped dvc processes left their lock entries, under process ids the next container's take again
    held = json.loads((stopped / "workspace" / ".dvc" / "tmp" / "rwlock").read_text())
    assert held.get("write"), held
    resumed = _docker_run("-e", "CS_REPRO_DEVICE=cpu", IMAGE, "quick", *TINY_ARGS, out=stopped)
    assert resumed.returncode == 0, (resumed.stdout[-3000:] + resumed.stderr[-3000:]
                                     + _stage_logs(stopped / "workspace", output))
    assert "dvc: dropped the lock entries of a dvc that no longer runs" in resumed.stdout, resumed.stdout
    mismatch = _tree_difference(straight / "workspace" / "runs", stopped / "workspace" / "runs")
    assert not mismatch, mismatch


def _stage_logs(workspace: Path, *earlier: str) -> str:
    """What a failure message needs: the stopped run's output and every stage log of the workspace."""
    logs = sorted((workspace / ".cache" / "parallel-logs").glob("*.log"))
    return "".join(f"\n--- {text}" for text in earlier) + "".join(
        f"\n--- {log.name}:\n{log.read_text()[-2000:]}" for log in logs)


def _tree_difference(left: Path, right: Path) -> list[str]:
    names = sorted({p.relative_to(left) for p in left.rglob("*") if p.is_file()}
                   | {p.relative_to(right) for p in right.rglob("*") if p.is_file()})
    assert names
    return [str(n) for n in names if not ((left / n).is_file() and (right / n).is_file()
                                          and filecmp.cmp(left / n, right / n, shallow=False))]


def test_a_first_run_explains_itself_in_one_line_before_any_dvc_work(image, tmp_path):
    # no volume, no GPU: the volume warning first, then the GPU line, and nothing else of ours
    bare = _docker_run(IMAGE, "paper")
    ours = [line for line in bare.stderr.splitlines() if line.startswith(("cs-repro:", "error:"))]
    assert bare.returncode != 0
    assert ours[0].startswith("cs-repro: warning: nothing is mounted on /work/out"), bare.stderr
    assert ours[1].startswith("error: the paper profile trains") and "--gpus all" in ours[1], bare.stderr
    assert "-e CS_REPRO_DEVICE=cpu" in ours[1] and len(ours) == 2, bare.stderr
    assert "Running stage" not in bare.stdout + bare.stderr and "WARNING" not in bare.stderr
    # insisting on the CPU: CIFAR-10 is not there and cannot be downloaded (no network)
    out = _volume(tmp_path / "out")
    cpu = _docker_run("-e", "CS_REPRO_DEVICE=cpu", IMAGE, "paper", out=out)
    ours = [line for line in cpu.stderr.splitlines() if line.startswith(("cs-repro:", "error:"))]
    assert cpu.returncode != 0 and len(ours) == 1, cpu.stderr
    assert re.search(r"^error: cifar10 is not in the image, no DATA_ROOT is given, .* -v /path/to/cifar10:/data/cifar10 "
                     r"-e DATA_ROOT=/data/cifar10$", ours[0]), ours[0]
    assert not (out / "workspace" / ".dvc" / "config.local").exists()  # the entry point's first DVC command
