"""One run across several processes (torch.distributed, gloo on the CPU): two processes with batch b each train
the weights one process trains with batch 2b; a run whose process is killed says so in one line and resumes to
the bytes of an uninterrupted run; only rank 0 writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_params_dict

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# A CS search (one round) and a hard-mask retraining of its ticket, through the library, as a stage runs them;
# rank 0 saves the trained weights.
TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from cs_repro import launch
    from cs_repro.io import atomic_torch_save
    from cs_repro.masks import SoftMasks
    from cs_repro.methods.cs import CSConfig, CSSearch
    from cs_repro.methods.retrain import TicketRetrain
    from cs_repro.params import load_params
    from cs_repro.run import RunSpec, TrainingRun

    torch.set_num_threads(1)
    params, out = load_params(Path(sys.argv[1])), Path(sys.argv[2])
    device = launch.init_from_env(torch.device("cpu")) if launch.is_worker() else torch.device("cpu")

    def weights(model):
        return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    search = TrainingRun(params, "lenet300_100", 0, device, checkpoint_dir=None)
    masks = SoftMasks.attach(search.model, search.prunable, 0.0)
    hooks = CSSearch(masks, CSConfig(s0=0.0, lambda_=params.lambda_, rounds=1, rewind_epoch=1))
    search.train(RunSpec("cs", "lenet300_100", 0, "s0=0", {}), hooks)
    binary = masks.binary_masks()
    atomic_torch_save({"weights": weights(search.model), "masks": binary,
                       "loss": [r.train_loss for r in search.history]}, out / "cs.pt")

    retrain = TrainingRun(params, "lenet300_100", 0, device, checkpoint_dir=None)
    retrain.train(RunSpec("retrain", "lenet300_100", 0, "s0=0", {}), TicketRetrain(binary, hooks.rewind_state))
    atomic_torch_save({"weights": weights(retrain.model), "loss": [r.train_loss for r in retrain.history]},
                      out / "retrain.pt")
""")


def _params(workspace: Path, processes: int, **overrides) -> Path:
    path = workspace / f"params-{processes}.yaml"
    network = {"processes": processes, "batch_size": 100, "epochs": 3, "lr_milestones": [2], **overrides}
    path.write_text(yaml.safe_dump(tiny_params_dict(**network)))
    return path


def test_two_processes_with_batch_b_train_the_weights_one_process_trains_with_batch_2b(workspace):
    """2,000 images, global batch 100 (50 per process): 60 optimiser steps of a CS search, then 60 of its ticket's
    hard-mask retraining from the rewind point; same samples in the same order, gradients averaged by DDP."""
    script = workspace / "train.py"
    script.write_text(TRAIN_SCRIPT)
    for processes in (1, 2):
        (workspace / f"out{processes}").mkdir()
    one = subprocess.run([sys.executable, str(script), str(_params(workspace, 1)), "out1"], cwd=workspace, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*TORCHRUN, "2", str(script), str(_params(workspace, 2)), "out2"], cwd=workspace, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    for name in ("cs", "retrain"):
        single = torch.load(workspace / "out1" / f"{name}.pt", weights_only=True)
        double = torch.load(workspace / "out2" / f"{name}.pt", weights_only=True)
        assert single["weights"].keys() == double["weights"].keys()
        for key, tensor in single["weights"].items():
            torch.testing.assert_close(double["weights"][key], tensor, rtol=1e-4, atol=1e-5, msg=f"{name} {key}")
        assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    single_masks = torch.load(workspace / "out1" / "cs.pt", weights_only=True)["masks"]
    double_masks = torch.load(workspace / "out2" / "cs.pt", weights_only=True)["masks"]
    for key, mask in single_masks.items():
        assert torch.equal(double_masks[key], mask), key
    # the search pruned something and the retraining moved the weights: the comparison is not of untouched tensors
    kept = sum(int(m.sum()) for m in single_masks.values()) / sum(m.numel() for m in single_masks.values())
    assert kept < 0.9
    retrained = torch.load(workspace / "out1" / "retrain.pt", weights_only=True)["weights"]
    searched = torch.load(workspace / "out1" / "cs.pt", weights_only=True)["weights"]
    assert not torch.allclose(retrained["fc1.weight"], searched["fc1.parametrizations.weight.original"])


def test_only_rank_0_writes(workspace):
    script = workspace / "write.py"
    script.write_text(textwrap.dedent("""
        import os, torch
        from cs_repro import distributed, launch
        from cs_repro.io import atomic_write_json
        launch.init_from_env(torch.device("cpu"))
        atomic_write_json({"rank": distributed.current().rank}, f"written-by-{os.environ['RANK']}.json")
        launch.finish()
    """))
    result = subprocess.run([*TORCHRUN, "2", str(script)], cwd=workspace, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in workspace.glob("written-by-*")) == ["written-by-0.json"]


def test_a_stage_started_by_torchrun_with_another_process_count_says_so(workspace):
    """Two copies of a one-process run would write the same files: the stage refuses, naming the setting."""
    result = subprocess.run([*TORCHRUN, "2", CS_STAGE, "--network", "lenet300_100", "--s0=0", "--seed", "0", "--out",
                             "x", "--params", str(_params(workspace, 1))], cwd=workspace, env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and not (workspace / "x").exists()
    assert ("error: this stage was started as 2 processes (torchrun?), but its network trains on 1 "
            "(networks.<network>.processes): run the stage itself") in result.stderr


def test_a_run_across_nodes_splits_its_processes_and_needs_a_rendezvous():
    from cs_repro.launch import launch_config
    from cs_repro.errors import UserError

    one = launch_config(2, {})
    assert (one.min_nodes, one.nproc_per_node, one.rdzv_endpoint, one.max_restarts) == (1, 2, "localhost:0", 0)
    nodes = launch_config(8, {"CS_REPRO_NNODES": "2", "CS_REPRO_RDZV_ENDPOINT": "node1:29400",
                              "CS_REPRO_RUN_ID": "job-17", "SLURM_NODEID": "1"})
    assert (nodes.min_nodes, nodes.max_nodes, nodes.nproc_per_node) == (2, 2, 4)
    assert (nodes.rdzv_endpoint, nodes.run_id, nodes.rdzv_configs["is_host"]) == ("node1:29400", "job-17", False)
    with pytest.raises(UserError, match="needs CS_REPRO_RDZV_ENDPOINT"):
        launch_config(8, {"CS_REPRO_NNODES": "2"})
    with pytest.raises(UserError, match="8 processes do not split evenly over CS_REPRO_NNODES=3 nodes"):
        launch_config(8, {"CS_REPRO_NNODES": "3", "CS_REPRO_RDZV_ENDPOINT": "node1:29400"})


def test_the_failure_line_names_what_ended_the_run_not_what_the_launcher_stopped():
    from types import SimpleNamespace

    from cs_repro.launch import _failure_line

    def failed(**codes):  # rank -> exit code, all seen at the same monitor tick
        return SimpleNamespace(failures={int(rank[1:]): SimpleNamespace(exitcode=code, timestamp=100)
                                         for rank, code in codes.items()})

    assert _failure_line(failed(r0=1, r1=-9), 2).startswith("process 1 of the run's 2 was killed by SIGKILL;")
    assert _failure_line(failed(r0=-15, r1=-15, r2=2), 4).startswith("process 2 of the run's 4 stopped on an error;")
    assert _failure_line(failed(r3=7), 4).startswith("process 3 of the run's 4 exited with status 7;")


# --- the stage: its own launcher, a killed process, the resume ----------------------------------------------

CS_STAGE = str(REPO / "stages" / "cs_search.py")


def _stage(workspace: Path, out: str, params: Path) -> list[str]:
    return [sys.executable, CS_STAGE, "--network", "lenet300_100", "--s0=0", "--seed", "0", "--out", out,
            "--params", str(params), "--checkpoint-dir", "checkpoints"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(item[5:]) for item in environ if item.startswith(b"RANK=")), None)


@pytest.mark.slow
def test_a_stopped_or_killed_run_ends_in_one_line_and_the_rerun_resumes_to_the_same_bytes(workspace):
    params = _params(workspace, 2, epochs=3)
    clean = subprocess.run(_stage(workspace, "clean", params), cwd=workspace, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert "starting 2 processes" in clean.stderr
    assert clean.stderr.count("round 1/3 epoch 1/3") == 1  # rank 0 alone reports progress

    # SIGTERM to the stage (docker stop, a SLURM time limit, dvc stopping): the clean interrupted line, nothing else
    stage = subprocess.Popen(_stage(workspace, "run", params), cwd=workspace, env=ENV, stderr=subprocess.PIPE,
                             text=True)
    for line in stage.stderr:
        if "round 1/3 epoch 2/3" in line:
            stage.terminate()
            break
    rest = stage.stderr.read()
    assert stage.wait(timeout=120) == 130
    assert [line for line in rest.splitlines() if line.strip()] == [
        "interrupted: progress up to the last finished epoch is kept; run the same command to resume"], rest

    # resumed, then kill -9 of one process mid-run
    stage = subprocess.Popen(_stage(workspace, "run", params), cwd=workspace, env=ENV, stderr=subprocess.PIPE,
                             text=True)
    killed = None
    for line in stage.stderr:
        if "round 2/3 epoch 2/3" in line:  # mid-run, checkpoints written after every epoch
            killed = next(pid for pid in _children(stage.pid) if _rank(pid) == 1)
            os.kill(killed, signal.SIGKILL)
            break
    rest = stage.stderr.read()
    assert stage.wait(timeout=120) == 2
    assert killed is not None
    assert "Traceback" not in rest
    errors = [line for line in rest.splitlines() if line.strip()]
    assert errors == ["error: process 1 of the run's 2 was killed by SIGKILL; the others were stopped. Finished epochs "
                      "are kept in the checkpoint: run the same command to resume"]
    assert not (workspace / "run").exists()
    assert len(list((workspace / "checkpoints").glob("*.pt"))) == 1

    again = subprocess.run(_stage(workspace, "run", params), cwd=workspace, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr and "(phase 1, epoch 2)" in again.stderr
    for name in ("ticket.pt", "metrics.json"):
        assert (workspace / "run" / name).read_bytes() == (workspace / "clean" / name).read_bytes(), name
    assert not list((workspace / "checkpoints").glob("*.pt"))
