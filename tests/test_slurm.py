"""The SLURM path against a real (one-node, CPU-only) SLURM: the documented submit, a task killed, the
documented recovery, and a result identical to a sequential `dvc repro` (docs/parallel.md, "SLURM").

The cluster comes from tests/slurm_cluster.py (installed with apt-get where missing and root is available,
skipped with the reason otherwise)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import ensure_slurm, start_cluster
from test_parallel import _clean, _env, _lock_hashes, _repo, _run, _tiny

REPO = Path(__file__).resolve().parents[1]
MAKE_ARRAY = REPO / "slurm" / "make_array.py"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = ensure_slurm()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def _task_state(cluster, job: str, index: int) -> str:
    lines = cluster.run("squeue", "-h", "-r", "-j", job, "-o", "%i %T").stdout.split("\n")
    states = dict(line.split() for line in lines if line.strip())
    return states.get(f"{job}_{index}", "gone")


@pytest.mark.slow
def test_documented_submit_kill_and_recovery_on_a_real_slurm(tmp_path, slurm, request):
    params = _tiny(seeds=[0, 1], s0=[0.0, -0.05])
    sequential = _repo(tmp_path / "sequential", params)
    main = tmp_path / "main"
    _run("git", "clone", "-q", str(sequential), str(main), cwd=tmp_path)
    # The reference runs while SLURM works (whose waves mostly wait on the scheduler); one thread each, so
    # sharing the cores changes no byte.
    reference_log = tmp_path / "reference.log"
    with reference_log.open("w") as log:
        reference = subprocess.Popen(["dvc", "repro"], cwd=sequential, stdout=log, stderr=subprocess.STDOUT,
                                     env=_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    request.addfinalizer(lambda: reference.poll() is None and reference.kill())  # a failed test stops it too

    env = {**_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CS_REPRO_SCRATCH=str(tmp_path / "scratch")),
           "SLURM_CONF": str(slurm.conf)}
    shared = tmp_path / "shared-cache"
    started = time.perf_counter()
    # The documented command, on a cluster without GPUs.
    made = subprocess.run([sys.executable, str(MAKE_ARRAY), "--shared-cache", str(shared), "--submit"], cwd=main,
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "the cluster has no GPUs" in made.stdout
    out = main / ".cache" / "slurm"
    assert not any("--gres" in s.read_text() for s in out.glob("*.sbatch"))
    waves = re.search(r"submitted waves ([\d ]+), collector (\d+)", made.stdout)
    assert waves, made.stdout
    search_wave = waves.group(1).split()[1]
    killed_stage = [line for line in (out / "wave1.txt").read_text().splitlines() if not line.startswith("#")][0]

    # Kill one search task while it runs.
    deadline = time.monotonic() + 300
    while _task_state(slurm, search_wave, 0) not in ("RUNNING", "gone") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _task_state(slurm, search_wave, 0) == "RUNNING"
    slurm.run("scancel", f"{search_wave}_0")
    assert slurm.idle_jobs(600), slurm.run("squeue").stdout

    # The collector refuses and names the command that recovers.
    collector_log = (out / "logs" / f"cs-repro-collect-{waves.group(2)}.log").read_text()
    assert f"not collecting: no finished task for {killed_stage}" in collector_log
    command = re.search(r"To resubmit exactly what is missing, with its dependencies and a new collector, run: (.+)",
                        collector_log).group(1)
    assert str(MAKE_ARRAY) in command and "--submit" in command

    # The documented recovery: that one command.
    again = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    resubmitted = {line for text in (p.read_text() for p in out.glob("wave*.txt"))
                   for line in text.splitlines() if not line.startswith("#") and line != "-"}
    assert killed_stage in resubmitted
    finished_before = {p.read_text().split()[1] for p in (out / "done").iterdir()} - resubmitted
    assert finished_before and not (finished_before & resubmitted)  # finished searches are not queued again
    assert slurm.idle_jobs(600), slurm.run("squeue").stdout
    slurm_s = time.perf_counter() - started
    print(f"\nreal SLURM (next to the sequential reference run): submit, kill, recover, collect {slurm_s:.1f}s")
    assert reference.wait(timeout=600) == 0, reference_log.read_text()[-3000:]

    # Complete, clean, and the same bytes as the sequential run.
    assert _clean(main)
    lock = yaml.safe_load((main / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(yaml.safe_load((sequential / "dvc.lock").read_text())["stages"])
    expected, got = _lock_hashes(sequential), _lock_hashes(main)
    deterministic = {p for p in expected if p.startswith(("runs/", "data/"))}
    assert deterministic and {p: got.get(p) for p in deterministic} == {p: expected[p] for p in deterministic}


@pytest.mark.slow
def test_a_rejected_option_submits_nothing(tmp_path, slurm):
    main = _repo(tmp_path / "main", _tiny(s0=[0.0]))
    env = {**_env(), "SLURM_CONF": str(slurm.conf)}
    made = subprocess.run([sys.executable, str(MAKE_ARRAY), "--shared-cache", str(tmp_path / "cache"), "--gres", "gpu:1",
                           "--submit"], cwd=main, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 2
    assert "sbatch rejects wave1.sbatch" in made.stderr and "nothing was submitted" in made.stderr
    assert not slurm.run("squeue", "-h").stdout.strip()
