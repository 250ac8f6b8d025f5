"""The DVC pipeline run for real, end to end, on small data: what re-runs when a parameter changes,
the paper profile on CIFAR-format fixture files, and resuming after kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cs_repro.profiles import compose_profile

from fixtures import write_cifar10, write_image_folder

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CS_REPRO_DEVICE": "cpu"}

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_pipeline_repo(root: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding this project's pipeline and the given params."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", "conf"):
        source = REPO / name
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.exists():
            shutil.copy2(source, target)
    for code in ("src", "stages"):
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git", "init", "-q", cwd=root)
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=root)
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pipeline", cwd=root)
    return root


#: The `dvc exp show` options README documents for a readable table: params that an experiment changed and
#: the headline metrics, without the timestamps and the per-stage dependency hashes.
EXP_SHOW_READABLE = ("--drop", "Created|State|Executor|src/|stages/|data/|metrics/|runs|timings", "--keep", "lambda")


#: The quick profile shrunk to a test's size, as Hydra overrides: `dvc exp run -S` needs them again, since it
#: composes params.yaml afresh from conf/ (what the tiny repo's params.yaml holds is not its starting point).
TINY_OVERRIDES = (
    "networks.lenet300_100.train_subset=1000", "networks.lenet300_100.test_subset=300",
    "networks.lenet300_100.val_size=200", "networks.lenet300_100.epochs=2",
    "networks.lenet300_100.lr=0.05", "networks.lenet300_100.lr_milestones=[1]", "imp.levels=2",
    "controls.imp_levels=[2]",
    "sweep.networks=[lenet300_100]", "sweep.seeds=[0]", "sweep.s0=[0.0,-0.05]",
    "baselines.sparsities=[0.9]", "l0.penalties=[0.001]", "baselines.layer_budgets=[]",
)


def tiny_quick_params(**sweep) -> dict:
    params = compose_profile("quick", list(TINY_OVERRIDES), conf_dir=REPO / "conf")
    params["sweep"].update(sweep)
    return params


def reproduce(repo: Path) -> set[str]:
    """Run `dvc repro`; the stages that actually trained or computed (not skipped, not restored from cache)."""
    output = run("dvc", "repro", cwd=repo).stdout
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(repo: Path, path: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_gaps_listed_with_s0_inside(repo: Path) -> None:
    rows = json.loads((repo / "metrics" / "results.json").read_text())["rows"]
    cs: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] == "cs" and r["variant"] == "rewind":
            cs.setdefault(r["setting"], []).append(r["remaining_weights"])
    ordered = sorted(((setting, sum(v) / len(v)) for setting, v in cs.items()), key=lambda item: -item[1])
    gaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if a[1] > 2 * b[1]]
    assert gaps, ordered
    coverage = (repo / "figures" / "REPORT.md").read_text().split("## Coverage", 1)[1].split("\n## ", 1)[0]
    for (denser, _), (sparser, _) in gaps:
        (line,) = [line for line in coverage.splitlines() if line.startswith("- LeNet-300-100: CS's tickets jump from")
                   and f"[{denser}] to" in line and f"[{sparser}]" in line]
        values = [float(v) for v in re.search(r"add s0 ≈ ([-0-9., ]+)", line).group(1).rstrip(".").split(", ")]
        low, high = sorted(float(setting.split("=")[1]) for setting in (denser, sparser))
        assert values and all(low < v < high for v in values), line
    printed = run("cs-repro", "suggest-settings", cwd=repo).stdout.strip().splitlines()
    assert printed[-1].startswith("dvc exp run -S 'sweep.s0=[") and printed[-1] in coverage


def test_quick_pipeline_runs_caches_and_reruns_only_what_a_param_touches(tmp_path):
    repo = make_pipeline_repo(tmp_path / "quick", tiny_quick_params())
    started = time.perf_counter()
    run("cs-repro", "parallel", cwd=repo)  # as `make repro` runs it: a stage per core (cpu.threads = 1)
    first = time.perf_counter() - started

    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary["lenet300_100"]) >= {"dense_acc", "cs", "imp"}
    assert 50 < summary["lenet300_100"]["dense_acc"] <= 100  # percent
    assert set(summary["lenet300_100"]["imp"]) == {"remaining", "acc", "epochs"}
    for name in ("ticket_search.png", "ticket_search.pdf", "REPORT.md", "tables/ticket_search.md",
                 "tables/inference_cost.csv", "tables/pruning.md"):
        assert (repo / "figures" / name).exists(), name
    results = json.loads((repo / "metrics" / "results.json").read_text())
    methods = {(r["method"], r["variant"]) for r in results["rows"]}
    assert {("dense", "rewind"), ("cs", "rewind"), ("cs", "reinit"), ("imp", "rewind"), ("imp", "reinit"),
            ("cs", "pruned")} <= methods
    assert "lenet300_100" in run("dvc", "metrics", "show", cwd=repo).stdout

    started = time.perf_counter()
    second = run("dvc", "repro", cwd=repo)
    assert "Data and pipelines are up to date" in second.stdout
    assert time.perf_counter() - started < min(first, 20)

    # metrics and figures are committed to git (cache: false), as DVC's example projects do, so that an
    # experiment has a baseline to diff against
    run("git", "add", "-A", cwd=repo)
    assert {"metrics/summary.json", "metrics/results.json", "metrics/plots/tickets.csv",
            "figures/REPORT.md", "figures/ticket_search.png", "dvc.lock"} <= set(
        run("git", "diff", "--cached", "--name-only", cwd=repo).stdout.split())
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results", cwd=repo)
    plots = json.loads(run("dvc", "plots", "show", "--json", cwd=repo).stdout)["data"]
    ticket_plot = plots["Tickets retrained from the rewind point"][0]["content"]
    assert ticket_plot["spec"]["encoding"]["x"]["scale"] == {"type": "log", "reverse": True}
    assert ticket_plot["spec"]["encoding"]["color"]["field"] == "method"
    assert {row["method"] for row in ticket_plot["data"]["values"]} >= {"CS", "IMP"}
    assert plots["figures/ticket_search.png"][0]["type"] == "image"

    overrides = [arg for override in TINY_OVERRIDES for arg in ("-S", override)]
    # (one more s0 than the tiny grid: at lambda 1e-9 its s0 = -0.05 keeps no weight, and the coverage check
    # below needs two CS tickets)
    output = run("dvc", "exp", "run", *overrides, "-S", "lambda=1e-9", "-S", "sweep.s0=[0.0,-0.01,-0.05]",
                 cwd=repo).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert {name.split("@")[0] for name in ran} == {
        "cs_search", "cs_retrain", "cs_beta1", "cs_released_clamp", "gmp_cs_layers", "cs_random_control",
        "params_check", "evaluate", "report"}  # CS work and the ablations on CS tickets; never prepare, IMP, L0, GMP
    assert {"cs_search@lenet300_100-0.0-0", "cs_search@lenet300_100--0.05-0"} <= ran
    # against the committed baseline (before, HEAD's metrics failed to load): every headline number, old and new
    committed = json.loads(run("git", "show", "HEAD:metrics/summary.json", cwd=repo).stdout)
    current = json.loads((repo / "metrics" / "summary.json").read_text())
    diff = json.loads(run("dvc", "metrics", "diff", "--all", "--json", cwd=repo).stdout)["metrics/summary.json"]

    def value(summary, key):
        for part in key.split("."):
            summary = summary[part]
        return summary

    assert {"lenet300_100.dense_acc", "lenet300_100.imp.remaining", "lenet300_100.imp.epochs"} <= set(diff)
    for key, entry in diff.items():
        assert entry["old"] == value(committed, key) and entry["new"] == value(current, key), key
    assert diff["lenet300_100.dense_acc"]["old"] == diff["lenet300_100.dense_acc"]["new"]  # dense not re-run
    moved = set(json.loads(run("dvc", "metrics", "diff", "--json", cwd=repo).stdout).get("metrics/summary.json", {}))
    assert moved == {key for key, entry in diff.items() if entry["old"] != entry["new"]}
    assert not any(key.startswith(("lenet300_100.imp", "lenet300_100.l0")) for key in moved)
    # The report applies its coverage rule to the experiment's own grid: the tiny grid's two s0 values land far
    # apart, so the gap is listed with s0 values inside it, and `cs-repro suggest-settings` prints the same.
    assert_gaps_listed_with_s0_inside(repo)
    verdicts = json.loads((repo / "metrics" / "verdicts.json").read_text())
    assert {"claim1", "claim2", "claim3"} <= set(verdicts)
    assert {v["stability"] for v in verdicts.values()} <= {"stable", "fragile"}
    table = run("dvc", "exp", "show", "--no-pager", "--csv", "--only-changed", *EXP_SHOW_READABLE, cwd=repo).stdout
    assert "lambda" in table.splitlines()[0] and len(table.splitlines()[0].split(",")) <= 20, table.splitlines()[0]

    set_param(repo, "imp.levels", 3)
    assert reproduce(repo) == {"params_check", "imp_search@lenet300_100-0", "imp_controls@lenet300_100-0", "evaluate",
                               "report"}

    # A new seed and a new s0 together: only (new seed, every s0) and (old seed, new s0) run; no old run.
    # Every method runs on every seed: the baselines are switched off here (no networks), which runs none of
    # their stages and takes their rows out of the results.
    set_param(repo, "baselines.networks", [])
    set_param(repo, "l0.retrain_networks", [])  # a list within baselines.networks (Hydra's -S resolves it, an edit does not)
    set_param(repo, "sweep.seeds", [0, 1])
    set_param(repo, "sweep.s0", [0.0, -0.05, 0.02])
    new_cs = {f"{kind}@lenet300_100-{s0}-{seed}" for kind in ("cs_search", "cs_retrain")
              for s0, seed in [("0.0", 1), ("-0.05", 1), ("0.02", 1), ("0.02", 0)]}
    new_imp = {f"{kind}@lenet300_100-1" for kind in ("imp_search", "imp_controls")}
    assert reproduce(repo) == new_cs | new_imp | {"params_check", "evaluate", "report"}
    rows = json.loads((repo / "metrics" / "results.json").read_text())["rows"]
    # (CS's tickets under the other two definitions run next to the quick profile's own: controls.binary_mask,
    # controls.released_scale)
    assert {r["method"] for r in rows} == {"dense", "cs", "imp", "cs_binary_mask", "cs_released_scale"}

    # Taking an s0 value out again: its runs stay in the workspace, but the results no longer read them.
    def cs_settings() -> set[str]:
        rows = json.loads((repo / "metrics" / "results.json").read_text())["rows"]
        return {r["setting"] for r in rows if r["method"] == "cs"}

    before = cs_settings()  # (s0 = -0.05 may keep no weights: such a ticket has no row)
    assert {"s0=0", "s0=0.02"} <= before
    set_param(repo, "sweep.s0", [0.0, -0.05])
    assert reproduce(repo) == {"params_check", "evaluate", "report"}
    assert (repo / "runs" / "lenet300_100" / "cs" / "s0=0.02" / "seed=0" / "search" / "metrics.json").exists()
    assert cs_settings() == before - {"s0=0.02"}
    assert "s0=0.02" not in (repo / "figures" / "tables" / "ticket_search.md").read_text()


def test_invalid_params_stop_the_pipeline_with_one_line(tmp_path):
    params = tiny_quick_params()
    params["lambda"] = "tiny"
    repo = make_pipeline_repo(tmp_path / "bad", params)
    (repo / "data" / "prepared").mkdir(parents=True)
    result = run("python", "stages/cs_search.py", "--network", "lenet300_100", "--s0=0", "--seed", "0", "--out", "x",
                 cwd=repo, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: lambda must be a number, got 'tiny'"
    assert "Traceback" not in result.stderr


def test_paper_profile_runs_every_stage_on_cifar_format_fixtures(tmp_path):
    cifar = write_cifar10(tmp_path / "cifar", n_per_batch=20, n_test=16)
    overrides = [f"data.root={cifar}", "data.download=false", "data.verify_checksums=false",
                 "imp.levels=1", "imp_c.levels=1", "imp_c.networks=[vgg16]", "sweep.seeds=[0]", "sweep.s0=[0.0]",
                 "baselines.sparsities=[0.9]", "l0.penalties=[0.001]",
                 "baselines.networks=[resnet20]", "baselines.layer_budgets=[erk]",  # every baseline stage kind runs once
                 "sensitivity.networks=[resnet20]", "sensitivity.settings=['lambda=1e-07']"]
    for network in ("resnet20", "vgg16"):
        overrides += [f"networks.{network}.{key}" for key in (
            "epochs=1", "lr_milestones=[]", "rewind_epoch=1", "batch_size=8", "max_batches=2", "val_size=20")]
    params = compose_profile("paper", overrides, conf_dir=REPO / "conf")
    repo = make_pipeline_repo(tmp_path / "paper", params)
    run("cs-repro", "parallel", "-j", "2", "--threads", "1", cwd=repo)  # two stages at a time, as on two GPUs
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=repo).stdout
    results = json.loads((repo / "metrics" / "results.json").read_text())
    assert {r["network"] for r in results["rows"]} == {"resnet20", "vgg16"}
    assert {r["dataset"] for r in results["rows"]} == {"cifar10"}
    ran = {(r["network"], r["method"]) for r in results["rows"]}
    # the optional methods fan out over their own networks lists (imp_c.networks, slimming.networks)
    assert {("vgg16", "imp_c"), ("resnet20", "slimming")} <= ran and ("resnet20", "imp_c") not in ran
    assert (repo / "figures" / "ticket_search.png").exists() and (repo / "figures" / "REPORT.md").exists()
    resnet_ticket = next(r for r in results["rows"] if r["network"] == "resnet20" and r["method"] == "cs")
    assert len(resnet_ticket["layer_remaining"]) == 19  # every 3x3 conv, no shortcut, no classifier


def test_imagenet_profile_runs_every_stage_on_a_tiny_image_folder_with_two_processes_per_run(tmp_path):
    """The imagenet profile as composed, truncated: ResNet-50 on 32-pixel crops of a tiny ImageFolder tree of real
    JPEGs, every run on two processes (gloo), through prepare, CS, GMP, one-shot magnitude pruning with
    fine-tuning, L0, dense, evaluate and report."""
    tree = write_image_folder(tmp_path / "imagenet")
    net = "networks.resnet50."
    overrides = [f"data.root={tree}", "data.workers=1", "sweep.s0=[0.0]", "baselines.sparsities=[0.9]",
                 "l0.penalties=[0.001]", "gmp.frequency=1", "magnitude.finetune_epochs=1",
                 *(net + item for item in ("epochs=1", "warmup_epochs=0", "lr_milestones=[]", "batch_size=8",
                                           "processes=2", "val_size=8", "image_size=32", "max_batches=2", "lr=0.05"))]
    params = compose_profile("imagenet", overrides, conf_dir=REPO / "conf")
    repo = make_pipeline_repo(tmp_path / "imagenet-run", params)
    done = run("cs-repro", "parallel", cwd=repo)
    assert "1 at a time" in done.stdout  # two cores, two processes per stage: one stage at a time
    assert "Data and pipelines are up to date" in run("dvc", "status", cwd=repo).stdout
    stages = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert {s.split("@")[0] for s in stages} == {"prepare", "params_check", "training_code", "cs_search", "gmp",
                                                 "magnitude_dense", "magnitude", "l0_search", "evaluate", "report"}
    rows = json.loads((repo / "metrics" / "results.json").read_text())["rows"]
    assert {r["dataset"] for r in rows} == {"imagenet"} and {r["network"] for r in rows} == {"resnet50"}
    assert {(r["method"], r["track"]) for r in rows} >= {("cs", "pruning"), ("gmp", "pruning"), ("l0", "pruning"),
                                                         ("magnitude_finetune", "pruning")}
    assert not {r["method"] for r in rows} & {"imp", "magnitude_rewind"}  # no ticket track in this profile
    gmp = next(r for r in rows if r["method"] == "gmp")
    assert abs(gmp["remaining_weights"] - 0.1) < 0.001 and len(gmp["layer_remaining"]) == 54
    report = (repo / "figures" / "REPORT.md").read_text()
    assert "ResNet-50" in report or "resnet50" in report
    # every training stage ran as two processes; rank 0 alone logged its epochs
    log = (repo / ".cache" / "parallel-logs" / "cs_search@resnet50-0.0-0.log").read_text()
    assert "starting 2 processes" in log and log.count("round 1/1 epoch 1/1") == 1


def test_kill_9_mid_search_then_rerun_resumes_to_identical_metrics(tmp_path):
    params = tiny_quick_params()
    params["networks"]["lenet300_100"].update(train_subset=3000, epochs=2, lr_milestones=[1])
    repo = make_pipeline_repo(tmp_path / "kill", params)
    run("python", "stages/prepare.py", "fashion_mnist", cwd=repo)
    command = ["python", "stages/cs_search.py", "--network", "lenet300_100", "--s0=0.0", "--seed", "0"]

    run(*command, "--out", "whole", "--checkpoint-dir", "ck_whole", cwd=repo)

    process = subprocess.Popen([*command, "--out", "killed", "--checkpoint-dir", "ck_killed"], cwd=repo, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoints: list[Path] = []
    while time.time() < deadline and process.poll() is None:
        # Kill once a checkpoint exists beyond round 1, so optimiser state and clamped logits must survive.
        checkpoints = list((repo / "ck_killed").glob("*.pt"))
        if checkpoints and _epochs_done(repo) >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the search finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (repo / "killed" / "metrics.json").exists()
    assert list((repo / "ck_killed").glob("*.pt")), "the per-epoch checkpoint survives kill -9"

    run(*command, "--out", "killed", "--checkpoint-dir", "ck_killed", cwd=repo)
    assert (repo / "whole" / "metrics.json").read_bytes() == (repo / "killed" / "metrics.json").read_bytes()


def _epochs_done(repo: Path) -> int:
    from cs_repro.io import read_checkpoint

    for path in (repo / "ck_killed").glob("*.pt"):
        try:
            return len(read_checkpoint(path)["history"])
        except (OSError, ValueError):  # being replaced right now
            return 0
    return 0
