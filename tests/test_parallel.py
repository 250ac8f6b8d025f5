"""Parallel and multi-machine runs (docs/parallel.md): the stage graph split, worker slots, SLURM waves, and,
end to end on a tiny pipeline, `cs-repro parallel` against a sequential `dvc repro`, a failing stage, and the
SLURM job body run without SLURM followed by the collector."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cs_repro.errors import UserError
from cs_repro_orchestration.parallel import (Pipeline, drop_stale_lock_entries, log_name, make_slots, parse_gpus,
                                             slurm_waves, split)

REPO = Path(__file__).resolve().parents[1]

DOT = """strict digraph {
"prepare@fashion_mnist";
"cs_search@net-0.0-0";
"cs_search@net--0.05-0";
"cs_retrain@net-0.0-0";
"cs_retrain@net--0.05-0";
"imp_search@net-0";
"imp_controls@net-0";
"evaluate";
"report";
"prepare@fashion_mnist" -> "cs_search@net-0.0-0";
"prepare@fashion_mnist" -> "cs_search@net--0.05-0";
"prepare@fashion_mnist" -> "cs_retrain@net-0.0-0";
"prepare@fashion_mnist" -> "cs_retrain@net--0.05-0";
"prepare@fashion_mnist" -> "imp_search@net-0";
"prepare@fashion_mnist" -> "imp_controls@net-0";
"cs_search@net-0.0-0" -> "cs_retrain@net-0.0-0";
"cs_search@net-0.0-0" -> "evaluate";
"cs_search@net--0.05-0" -> "cs_retrain@net--0.05-0";
"cs_search@net--0.05-0" -> "evaluate";
"cs_retrain@net-0.0-0" -> "evaluate";
"cs_retrain@net--0.05-0" -> "evaluate";
"imp_search@net-0" -> "imp_controls@net-0";
"imp_search@net-0" -> "evaluate";
"imp_controls@net-0" -> "evaluate";
"evaluate" -> "report";
}
"""


# --- fast: the graph, the slots, the waves ---------------------------------------------------------------


def test_dag_splits_into_head_fanout_and_tail():
    pipeline = Pipeline.from_dot(DOT)
    parts = split(pipeline)
    assert parts.head == ["prepare@fashion_mnist"]
    assert parts.tail == ["evaluate", "report"]
    assert set(parts.fanout) == {"cs_search@net-0.0-0", "cs_search@net--0.05-0", "cs_retrain@net-0.0-0",
                                 "cs_retrain@net--0.05-0", "imp_search@net-0", "imp_controls@net-0"}
    assert pipeline.upstream["cs_retrain@net-0.0-0"] == {"prepare@fashion_mnist", "cs_search@net-0.0-0"}
    assert pipeline.closure(["cs_search@net-0.0-0"], "down") == {"cs_retrain@net-0.0-0", "evaluate", "report"}


def test_slurm_waves_chain_retrain_to_its_own_search():
    pipeline = Pipeline.from_dot(DOT)
    waves = slurm_waves(pipeline, set(pipeline.stages))
    assert [w.stages for w in waves[:2]] == [
        ["prepare@fashion_mnist"], ["cs_search@net-0.0-0", "cs_search@net--0.05-0", "imp_search@net-0"]]
    assert waves[0].head and not waves[1].head and waves[1].dependency == "afterok"
    assert waves[2].dependency == "aftercorr"
    assert waves[2].stages == ["cs_retrain@net-0.0-0", "cs_retrain@net--0.05-0", "imp_controls@net-0"]
    assert len(waves) == 3  # evaluate and report are the collector's

    # a retrain keeps its search's array index (1); index 0 of its wave stays unused
    waves = slurm_waves(pipeline, {"cs_search@net-0.0-0", "cs_search@net--0.05-0", "cs_retrain@net--0.05-0"})
    assert waves[2].stages == [None, "cs_retrain@net--0.05-0"] and waves[2].indices == [1]

    # a stage that needs two searches cannot wait for one task: the whole previous wave (afterok)
    joined = Pipeline.from_dot(DOT.replace("}\n", '"cs_search@net--0.05-0" -> "cs_retrain@net-0.0-0";\n}\n'))
    assert slurm_waves(joined, set(joined.stages))[2].dependency == "afterok"


def test_workers_get_a_gpu_round_robin_or_their_own_cores():
    slots = make_slots(3, ["0", "1"], [0, 1, 2, 3, 4, 5], {"PATH": "/bin"}, "/usr/bin/taskset")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "0"]
    assert [s.prefix for s in slots] == [["/usr/bin/taskset", "-c", c] for c in ("0,1", "2,3", "4,5")]
    assert {s.env["OMP_NUM_THREADS"] for s in slots} == {"2"}

    cpu = make_slots(2, [], [4, 5, 6, 7, 8], {}, None)
    assert [s.env["OMP_NUM_THREADS"] for s in cpu] == ["2", "2"] and [s.prefix for s in cpu] == [[], []]
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in cpu)
    assert "cpus 4-5" in cpu[0].label and "cpus 6-7" in cpu[1].label

    crowded = make_slots(3, [], [0, 1], {}, "taskset", threads=1)
    assert [s.prefix[-1] for s in crowded] == ["0", "1", "0"]
    with pytest.raises(UserError):
        make_slots(0, [], [0], {})


def test_a_stage_on_several_processes_gets_as_many_gpus(tmp_path):
    """networks.<net>.processes = 2 on 5 GPUs: two workers of two GPUs each (the fifth would be half a run)."""
    from cs_repro_orchestration.parallel import largest_run_processes, read_params_file

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "networks": {"resnet50": {"processes": 2}, "lenet300_100": {"processes": 1}, "unused": {"processes": 8},
                     "vgg16": {"processes": 4}},
        "sweep": {"networks": ["lenet300_100", "resnet50"]}, "baselines": {"networks": []}}))
    assert largest_run_processes(read_params_file(tmp_path)) == 2
    params = read_params_file(tmp_path)
    params["baselines"]["networks"] = ["vgg16"]  # a network only the baselines train counts too
    assert largest_run_processes(params) == 4
    slots = make_slots(2, ["0", "1", "2", "3", "4"], [0, 1, 2, 3], {}, None, gpus_per_stage=2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert "GPU 0,1" in slots[0].label
    with pytest.raises(UserError, match="each run trains on 8 GPUs .* but 5 are visible"):
        make_slots(1, ["0", "1", "2", "3", "4"], [0], {}, None, gpus_per_stage=8)
    (tmp_path / "params.yaml").write_text("networks: [oops")
    assert read_params_file(tmp_path) == {}
    assert largest_run_processes({"networks": ["oops"], "sweep": {"networks": ["oops"]}}) == 1  # the stages say why


def test_slurm_asks_for_as_many_gpus_as_a_run_has_processes(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_array", REPO / "slurm" / "make_array.py")
    make_array = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_array)
    monkeypatch.setattr(make_array, "cluster_has_gpus", lambda: True)
    assert make_array.choose_gres("auto", 4) == "gpu:4"
    assert make_array.choose_gres("auto") == "gpu:1"
    assert make_array.choose_gres("gpu:a100:2", 4) == "gpu:a100:2"  # the user's own GRES as given
    # a run larger than a node: the fewest nodes over which every multi-process run splits evenly
    assert make_array.nodes_per_task([1, 4], 8) == 1
    assert make_array.nodes_per_task([16, 1], 8) == 2 and make_array.choose_gres("auto", 16, 2) == "gpu:8"
    assert make_array.nodes_per_task([24], 8) == 3 and make_array.nodes_per_task([12], 8) == 2
    assert make_array.nodes_per_task([10], 4) == 5  # not 3 (10 does not split in 3) nor 4
    assert make_array.nodes_per_task([16, 2], 8) == 2
    with pytest.raises(UserError, match=r"runs of \[3, 16\] processes cannot share one number of nodes"):
        make_array.nodes_per_task([16, 3], 8)
    monkeypatch.setattr(make_array, "cluster_has_gpus", lambda: False)
    assert make_array.choose_gres("auto", 4) is None


def test_dvc_lock_entries_of_stages_no_longer_declared_are_dropped_and_the_rest_kept_byte_for_byte(tmp_path):
    """DVC keeps a removed grid point's entry in dvc.lock for ever (and rewrites the file after every stage)."""
    lock = tmp_path / "dvc.lock"
    original = (REPO / "dvc.lock").read_text()
    lock.write_text(original)
    names = list(yaml.safe_load(original)["stages"])
    declared = [name for name in names if not name.startswith("cs_search@")]
    assert drop_stale_lock_entries(tmp_path, declared) == [n for n in names if n.startswith("cs_search@")]
    assert list(yaml.safe_load(lock.read_text())["stages"]) == declared
    once = lock.read_text()
    assert drop_stale_lock_entries(tmp_path, declared) == [] and lock.read_text() == once
    # every line left is the original's, in its order: the kept entries are DVC's bytes, untouched
    remaining = iter(original.splitlines())
    assert all(any(line == other for other in remaining) for line in once.splitlines())


def test_lock_entries_of_dvc_processes_that_no_longer_run_are_dropped_even_when_their_pid_is_taken(tmp_path):
    from cs_repro_orchestration.dvc_locks import drop_dead_holders

    finished = subprocess.Popen(["true"])
    finished.wait()
    # a process that took a killed dvc's id (in a new container, the rule) and a dvc that still runs
    stranger = subprocess.Popen(["sleep", "60"])
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--wait-for-lock", "repro", "-s", "b"])
    try:
        dead = {"pid": finished.pid, "cmd": "/venv/bin/dvc repro -s a"}
        reused = {"pid": stranger.pid, "cmd": "/venv/bin/dvc --wait-for-lock repro -s a"}
        alive = {"pid": holder.pid, "cmd": "/venv/bin/dvc --wait-for-lock repro -s b"}
        lock = tmp_path / ".dvc" / "tmp" / "rwlock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({
            "write": {"/w/runs/a": reused, "/w/runs/old": dead, "/w/runs/b": alive},
            "read": {"/w/params.yaml": [reused, alive, dead], "/w/data": [dead]},
        }))
        dropped = drop_dead_holders(tmp_path)
        left = json.loads(lock.read_text())
    finally:
        stranger.kill()
        holder.kill()
    assert sorted(h["pid"] for h in dropped) == sorted([finished.pid, stranger.pid])
    assert left["write"] == {"/w/runs/b": alive}
    assert left["read"] == {"/w/params.yaml": [alive]}
    assert drop_dead_holders(tmp_path / "no-workspace") == []


def test_the_committed_dvc_lock_holds_only_declared_stages():
    listed = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    stale = set(yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]) - set(listed.stdout.split())
    assert not stale, f"dvc.lock holds stages dvc.yaml no longer declares: {sorted(stale)} (make repro drops them)"


def test_gpu_option_parsing():
    assert parse_gpus(None) is None
    assert parse_gpus("0, 1") == ["0", "1"]
    assert parse_gpus("none") == []
    with pytest.raises(UserError, match="--gpus"):
        parse_gpus("cuda:0")
    assert log_name("cs_search@lenet5--0.01-0") == "cs_search@lenet5--0.01-0.log"


# --- slow: the real pipeline, tiny -----------------------------------------------------------------------


def _tiny(**sweep):
    from test_pipeline_run import tiny_quick_params

    params = tiny_quick_params(**sweep)
    if "baselines" in params:  # the baseline/ablation stages: an empty matrix generates none of them
        params["baselines"]["networks"] = []
        params["l0"]["retrain_networks"] = []  # composed from baselines.networks before it was emptied here
    return params


def _repo(root: Path, params: dict) -> Path:
    from test_pipeline_run import make_pipeline_repo

    return make_pipeline_repo(root, params)


def _env(**extra) -> dict[str, str]:
    from test_pipeline_run import ENV

    return {**ENV, **extra}


def _run(*args, cwd: Path, check: bool = True, **extra) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=_env(**extra), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _lock_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


def _clean(repo: Path) -> bool:
    return "Data and pipelines are up to date" in _run("dvc", "status", cwd=repo).stdout


@pytest.mark.slow
def test_parallel_two_workers_matches_sequential_repro(tmp_path):
    sequential = _repo(tmp_path / "sequential", _tiny())
    parallel = tmp_path / "parallel"
    _run("git", "clone", "-q", str(sequential), str(parallel), cwd=tmp_path)

    plan = _run("cs-repro", "parallel", "-j", "2", "--threads", "1", "--dry-run", cwd=parallel).stdout
    assert "dvc --wait-for-lock repro prepare@fashion_mnist" in plan and "6 of 6 fan-out stages" in plan
    assert re.search(r"wave 2: cs_retrain@\S+ cs_retrain@\S+ imp_controls@", plan), plan
    assert not (parallel / "dvc.lock").exists()

    # CPU results depend on the thread count in the last bits of some sums (the logged mask penalty), so both
    # runs use one thread per stage process: the comparison is about the scheduling, not about threads.
    started = time.perf_counter()
    _run("dvc", "repro", cwd=sequential, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    sequential_s = time.perf_counter() - started
    started = time.perf_counter()
    result = _run("cs-repro", "parallel", "-j", "2", "--threads", "1", cwd=parallel)
    parallel_s = time.perf_counter() - started
    print(f"\ntiny pipeline wall-clock: sequential dvc repro {sequential_s:.1f}s, cs-repro parallel -j 2 "
          f"{parallel_s:.1f}s ({os.cpu_count()} cores)\n{result.stdout}")

    expected, got = _lock_hashes(sequential), _lock_hashes(parallel)
    deterministic = {p for p in expected if p.startswith(("runs/", "data/"))}
    assert len([p for p in deterministic if p.startswith("runs/")]) == 6  # CS x 2 s0 (search, retrain), IMP x 2
    assert {p: got.get(p) for p in deterministic} == {p: expected[p] for p in deterministic}
    assert set(got) == set(expected)  # dvc.lock complete, timings/, metrics/ and figures/ included
    assert _clean(parallel) and _clean(sequential)
    for stage in ("cs_search@lenet300_100-0.0-0", "cs_retrain@lenet300_100--0.05-0", "imp_controls@lenet300_100-0"):
        assert re.search(rf"start  {re.escape(stage)}  \[worker", result.stdout)
        assert re.search(rf"done   {re.escape(stage)}  in [0-9.]+s \(ran\)", result.stdout)
        assert "Running stage" in (parallel / ".cache/parallel-logs" / log_name(stage)).read_text()
    assert "6 fan-out stages ran" in result.stdout and "0 failed" in result.stdout
    again = _run("cs-repro", "parallel", "-j", "2", cwd=parallel).stdout
    assert "every stage is up to date (dvc status): nothing to run" in again and "fan-out" not in again
    assert _lock_hashes(parallel) == got


@pytest.mark.slow
def test_a_failing_stage_is_named_and_the_others_finish(tmp_path):
    repo = _repo(tmp_path / "failing", _tiny(s0=[0.0]))
    dvc_yaml = repo / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("python stages/cs_search.py", "python stages/cs_search.py --no-such-option"))
    # and a killed dvc's lock on imp_search's output, its process id since taken by another process (as in a
    # restarted container): DVC alone would refuse the stage as "busy"
    stranger = subprocess.Popen(["sleep", "600"])
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    killed = {"pid": stranger.pid, "cmd": f"{sys.prefix}/bin/dvc --wait-for-lock repro -s imp_search@lenet300_100-0"}
    rwlock.write_text(json.dumps({"write": {str(repo / "runs/lenet300_100/imp/seed=0/search"): killed}}))
    try:
        result = _run("cs-repro", "parallel", "-j", "2", cwd=repo, check=False)
    finally:
        stranger.kill()
    assert f"dvc: dropped the lock entries of a dvc that no longer runs (PID {stranger.pid}:" in result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    log = ".cache/parallel-logs/cs_search@lenet300_100-0.0-0.log"
    assert "FAILED cs_search@lenet300_100-0.0-0  after" in result.stdout
    assert f"failed: cs_search@lenet300_100-0.0-0 (log: {log})" in result.stdout
    assert "No such option" in (repo / log).read_text()
    for stage in ("cs_retrain@lenet300_100-0.0-0", "evaluate", "report"):
        assert f"skipped: {stage} (needs failed cs_search@lenet300_100-0.0-0)" in result.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"imp_search@lenet300_100-0", "imp_controls@lenet300_100-0"} <= set(lock)
    assert "cs_search@lenet300_100-0.0-0" not in lock and "evaluate" not in lock


@pytest.mark.slow
def test_slurm_job_body_in_clones_with_a_shared_cache_then_the_collector_trains_nothing(tmp_path):
    main = _repo(tmp_path / "main", _tiny(s0=[0.0]))
    shared = tmp_path / "shared-cache"
    made = _run("python", str(REPO / "slurm/make_array.py"), "--shared-cache", str(shared),
                "--sbatch=--time=02:00:00", cwd=main)
    out = main / ".cache/slurm"
    # cs_retrain and imp_controls each need one search of wave 1: task i waits for task i only (aftercorr)
    assert "wave 2: 2 tasks (aftercorr wave 1)" in made.stdout, made.stdout
    waves = sorted(out.glob("wave*.txt"))
    assert [w.name for w in waves] == ["wave0.txt", "wave1.txt", "wave2.txt"]
    assert "--gres" not in (out / "wave0.sbatch").read_text()  # prepare needs no GPU
    assert "#SBATCH --gres=gpu:1" in (out / "wave1.sbatch").read_text()
    assert "#SBATCH --time=02:00:00" in (out / "collect.sbatch").read_text()
    submit = (out / "submit.sh").read_text()
    assert "--dependency=afterok:${w0}" in submit and "--dependency=aftercorr:${w1}" in submit
    assert "--dependency=afterany:${w0}:${w1}:${w2} collect.sbatch" in submit
    _run("bash", "-n", str(out / "submit.sh"), cwd=main)
    assert str(shared) in _run("dvc", "cache", "dir", cwd=main).stdout

    early = _run("bash", str(REPO / "slurm/collect.sh"), str(out), cwd=tmp_path, check=False)
    assert early.returncode == 1 and "not collecting: no finished task for prepare@fashion_mnist" in early.stderr

    scratch = tmp_path / "scratch"
    logs = []
    for wave in waves:  # the tasks of one wave run at the same time, as in the array
        stages = [line for line in wave.read_text().splitlines() if not line.startswith("#")]
        tasks = [subprocess.Popen(["bash", str(REPO / "slurm/job.sh"), str(wave), str(i)], cwd=tmp_path,
                                  env=_env(CS_REPRO_SCRATCH=str(scratch), OMP_NUM_THREADS="1"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(len(stages))]
        for stage, task in zip(stages, tasks):
            output = task.communicate()[0]
            assert task.returncode == 0, output
            assert f"Running stage '{stage}'" in output, output  # each task trains its own stage only
            logs.append(output)
    assert not list(scratch.iterdir())  # clones removed
    assert not (main / "runs").exists()  # nothing ran in the main workspace

    collected = _run("bash", str(REPO / "slurm/collect.sh"), str(out), cwd=tmp_path)
    ran = set(re.findall(r"Running stage '([^']+)'", collected.stdout))
    assert ran == {"evaluate", "report"}, collected.stdout
    assert "is cached - skipping run" in collected.stdout
    assert _clean(main)
    assert (main / "figures" / "REPORT.md").exists()


def test_a_node_joins_the_run_its_first_node_announces(tmp_path, monkeypatch, capsys):
    from cs_repro import launch

    marker = tmp_path / "run.json"
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert launch.join_run(marker, timeout_s=0.2, poll_s=0.05) == 2
    assert "node 1: no stage started on the first node within 0 s" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv(launch.RUN_MARKER_ENV, str(marker))
    launch.announce_run(1)  # the first node's one-process stage: the others have nothing to do
    assert json.loads(marker.read_text())["processes"] == 1
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert launch.join_run(marker, timeout_s=0.2) == 0
    assert "nothing to do here" in capsys.readouterr().out
    launch.announce_run(4)  # only the first node announces
    assert json.loads(marker.read_text())["processes"] == 1
    marker.write_text('{"processes": 0}')  # job.sh on the first node, which started no run
    assert launch.join_run(marker, timeout_s=0.2) == 0
    assert "the first node started no run" in capsys.readouterr().out


@pytest.mark.slow
def test_slurm_task_across_two_nodes_trains_one_run_with_the_bytes_of_one_node(tmp_path):
    """A run of 2 processes with 1 GPU per node: make_array asks for 2 nodes and srun starts job.sh on each. Here
    both nodes are this machine (SLURM_NODEID 0 and 1 set by hand, the rendezvous on localhost): node 0 restores
    the inputs and runs the stage through DVC, node 1 waits for it and joins; the ticket and metrics are the
    bytes a two-process run on one node writes."""
    from slurm_cluster import _free_port

    params = _tiny(s0=[0.0])
    params["networks"]["lenet300_100"]["processes"] = 2
    main = _repo(tmp_path / "main", params)
    made = _run("python", str(REPO / "slurm/make_array.py"), "--shared-cache", str(tmp_path / "shared-cache"),
                "--gpus-per-node", "1", "--gres", "auto", cwd=main)
    out = main / ".cache/slurm"
    assert "2 nodes per task, 1 processes on each" in made.stdout, made.stdout
    search = (out / "wave1.sbatch").read_text()
    assert "#SBATCH --nodes=2" in search and "#SBATCH --ntasks-per-node=1" in search
    assert "exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash " in search
    assert "--nodes" not in (out / "wave0.sbatch").read_text()  # prepare: one node
    stages = [line for line in (out / "wave1.txt").read_text().splitlines() if not line.startswith("#")]
    stage = "imp_search@lenet300_100-0"

    env = dict(OMP_NUM_THREADS="1", CS_REPRO_SCRATCH=str(tmp_path / "scratch"))
    _run("bash", str(REPO / "slurm/job.sh"), str(out / "wave0.txt"), "0", cwd=tmp_path, **env)  # prepare
    job = dict(env, SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="4242", CS_REPRO_RDZV_ENDPOINT=f"127.0.0.1:{_free_port()}")
    task = [str(REPO / "slurm/job.sh"), str(out / "wave1.txt"), str(stages.index(stage))]
    nodes = [subprocess.Popen(["bash", *task], cwd=tmp_path, env=_env(**job, SLURM_NODEID=str(node)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (1, 0)]
    second, first = (node.communicate(timeout=600)[0] for node in nodes)
    assert nodes[1].returncode == 0, first
    assert nodes[0].returncode == 0, second
    assert f"Running stage '{stage}'" in first and "starting 1 processes (torch.distributed, this node of 2)" in first
    assert "node 1: joining the run of 2 processes" in second and "Running stage" not in second
    assert not (main / ".cache/slurm-work/4242-0").exists()  # the shared clone is removed

    # the job again (a requeue): node 0 restores the stage from the shared run-cache, node 1 is told to end
    again = [subprocess.Popen(["bash", *task], cwd=tmp_path, env=_env(**job, SLURM_NODEID=str(node),
                                                                      SLURM_RESTART_COUNT="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (1, 0)]
    second, first = (node.communicate(timeout=600)[0] for node in again)
    assert again[1].returncode == 0 and "is cached - skipping run" in first and "Running stage" not in first, first
    assert again[0].returncode == 0 and "the first node started no run" in second, second

    # the same run on one node (two local processes), through DVC, in a clone with its own cache
    alone = tmp_path / "alone"
    _run("git", "clone", "-q", str(main), str(alone), cwd=tmp_path)
    _run("dvc", "repro", stage, cwd=alone, OMP_NUM_THREADS="1")
    # the main workspace restores the two-node run's outputs from the shared run-cache, training nothing
    restored = _run("dvc", "repro", stage, cwd=main)
    assert "Running stage" not in restored.stdout and "is cached - skipping run" in restored.stdout
    folder = "runs/lenet300_100/imp/seed=0/search"
    written = sorted(p.relative_to(alone / folder) for p in (alone / folder).rglob("*") if p.is_file())
    assert len(written) >= 3  # the tickets of both levels and the metrics
    for name in written:
        assert (main / folder / name).read_bytes() == (alone / folder / name).read_bytes(), name
