"""The DVC pipeline's wiring, checked without running it: profiles, declared params, parameter parsing."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cs_repro.errors import UserError
from cs_repro.params import load_params, params_from_dict
from cs_repro.profiles import compose_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def quick() -> dict:
    return compose_profile("quick", conf_dir=REPO / "conf")


def test_committed_params_are_the_quick_profile(quick):
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == quick


@pytest.mark.parametrize("profile", ["quick", "paper", "extended", "frankle"])
def test_every_profile_validates(profile):
    params = params_from_dict(compose_profile(profile, conf_dir=REPO / "conf"))
    assert params.profile == profile


def test_quick_profile_meets_the_brief(quick):
    params = params_from_dict(quick)
    assert {params.network(n).dataset for n in params.sweep.networks} == {"fashion_mnist"}
    assert len(params.sweep.seeds) >= 2 and len(params.sweep.s0) >= 5
    assert 1 - (1 - params.imp.prune_fraction) ** params.imp.levels >= 0.95
    assert params.controls.reinit


def test_paper_profile_follows_the_released_protocol():
    params = params_from_dict(compose_profile("paper", conf_dir=REPO / "conf"))
    assert set(params.sweep.networks) == {"resnet20", "vgg16"} and len(params.sweep.seeds) == 3
    resnet = params.network("resnet20")
    assert (resnet.epochs, resnet.lr_milestones, resnet.batch_size, resnet.rewind_epoch) == (85, [56, 71], 128, 2)
    assert resnet.augment and resnet.val_size == 5000 and resnet.weight_decay == 1e-4
    assert 1 - (1 - params.imp.prune_fraction) ** params.imp.levels >= 0.98
    assert (params.cs.beta_final, params.cs.rounds, params.lambda_) == (200.0, 3, 1e-8)


def test_lambda_override_composes_as_a_float():
    composed = compose_profile("quick", ["lambda=1e-9"], conf_dir=REPO / "conf")
    assert params_from_dict(composed).lambda_ == 1e-9


def _declared(stage: dict) -> set[str]:
    return {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}


def test_each_stage_declares_only_the_params_it_reads(stages):
    assert _declared(stages["prepare"]["do"]) == {"data"}
    assert _declared(stages["cs_search"]) == {"cpu", "lambda", "cs", "networks.${item.network}"}
    assert _declared(stages["cs_retrain"]) == {"cpu", "cs.mask_scale", "controls.reinit", "controls.binary_mask",
                                               "controls.released_scale", "controls.folded_scale",
                                               "networks.${item.network}"}
    assert _declared(stages["imp_search"]) == {"cpu", "imp.prune_fraction", "imp.levels", "networks.${item.network}"}
    assert _declared(stages["imp_controls"]) == {"cpu", "controls.reinit", "controls.imp_levels", "controls.random",
                                                 "networks.${item.network}"}
    # evaluate depends on every param: the runs it reads are those the fan-out lists declare now.
    assert stages["evaluate"]["params"] == [{"params.yaml": None}]
    # lambda reaches CS work only; imp reaches IMP work only; the sweep lists reach no training stage.
    for name, stage in stages.items():
        declared = _declared(stage.get("do", stage))
        if "lambda" in declared or "cs" in declared:
            assert name.startswith("cs_"), name
        assert not any(p.startswith("imp") for p in declared) or name.startswith("imp_"), name
        assert not any(p.startswith("sweep") for p in declared), name


def test_no_stage_persists_outputs_or_names_a_device(stages):
    text = (REPO / "dvc.yaml").read_text()
    assert "persist" not in text
    assert "cuda" not in text and "CUDA_VISIBLE_DEVICES" not in text


# --- code dependencies: a stage re-runs whenever code that shapes its outputs changes ----------------

SRC = REPO / "src" / "cs_repro"
# Modules whose code decides what a stage writes. The rest (cli, stage_cli, params parsing, errors, io, device
# choice, profiles, parallel runs) only decide how a run is launched or reported.
# params.py imports the registries (models, datasets) to validate names, not to compute anything.
VALIDATION_ONLY = {SRC / "params.py"}
SHAPES_OUTPUTS = ["data", "kernels", "masks.py", "train.py", "methods", "run.py", "results.py", "models",
                  "flops.py", "evaluation.py", "tickets.py", "report", "io.py", "distributed.py"]


def _module_path(module: str) -> Path | None:
    relative = SRC.joinpath(*module.split(".")[1:])
    if relative.with_suffix(".py").exists():
        return relative.with_suffix(".py")
    # a package is its __init__.py: importing a name from it runs that file (and what it imports), not every module
    return relative / "__init__.py" if (relative / "__init__.py").exists() else None


def _imported(path: Path) -> set[Path]:
    """cs_repro modules imported by a file, or by any file of a folder (static: every `from cs_repro...`)."""
    import ast

    found = set()
    for source in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cs_repro":
                for alias in node.names:  # `from cs_repro.methods import cs` names the module cs
                    target = _module_path(f"{node.module}.{alias.name}") or _module_path(node.module)
                    if target:
                        found.add(target)
            elif isinstance(node, ast.Import):
                found.update(t for a in node.names if a.name.split(".")[0] == "cs_repro" and (t := _module_path(a.name)))
    return found


def _within(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def test_stage_code_deps_cover_everything_they_import(stages):
    """If a stage depends on run.py and run.py imports masks.py, which imports kernels/,
    the stage must depend on all three: DVC only re-runs a stage for changes in what it lists."""
    shaping = [SRC / name for name in SHAPES_OUTPUTS]
    checked = 0
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        script = next(part for part in stage["cmd"].split() if part.startswith("stages/"))
        assert script in stage.get("deps", []), f"stage {name} runs {script} but does not list it in deps"
        listed = stage.get("deps", [])
        if "digests/training_code.sha256" in listed:  # stands for the training_code stage's own deps
            listed = listed + stages["training_code"]["deps"]
        deps = [REPO / d for d in listed if d.startswith(("src/cs_repro", "stages/"))]
        closure, todo = set(), list(deps)
        while todo:
            for module in _imported(todo.pop()):
                if module not in closure:
                    closure.add(module)
                    if module not in VALIDATION_ONLY:
                        todo.append(module)
        missing = sorted(str(m.relative_to(REPO)) for m in closure if _within(m, shaping) and not _within(m, deps))
        assert not missing, f"stage {name} imports {missing} but does not list them in deps"
        checked += bool(deps)
    assert checked >= 15  # the training, evaluation and report stages all list code


def test_training_code_digest_changes_exactly_with_its_listed_code(tmp_path, stages):
    """The training stages depend on one digest of the code listed once, in stage training_code: it must
    change with any listed file (added, edited) and with nothing else (other code, bytecode caches)."""
    import shutil

    assert sum("digests/training_code.sha256" in s.get("deps", []) for s in stages.values()) >= 15
    repo = tmp_path / "repo"
    shutil.copytree(SRC, repo / "src" / "cs_repro", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")

    def digest() -> str:
        subprocess.run([sys.executable, str(REPO / "stages" / "code_digest.py"), "--out", "d.txt"], cwd=repo,
                       check=True, capture_output=True)
        return (repo / "d.txt").read_text()

    first = digest()
    assert len(first.strip()) == 64 and digest() == first  # a sha256, the same twice
    (repo / "src/cs_repro/report/rows.py").write_text("# not training code\n")
    (repo / "src/cs_repro/methods/__pycache__").mkdir()
    (repo / "src/cs_repro/methods/__pycache__/cs.cpython-311.pyc").write_bytes(b"bytecode")
    assert digest() == first
    cs = repo / "src/cs_repro/methods/cs.py"
    cs.write_text(cs.read_text() + "\n")
    second = digest()
    assert second != first
    (repo / "src/cs_repro/models/new_net.py").write_text("")
    assert digest() not in (first, second)
    shutil.rmtree(repo / "src/cs_repro/models")
    failed = subprocess.run([sys.executable, str(REPO / "stages" / "code_digest.py"), "--out", "d.txt"], cwd=repo,
                            capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].endswith(
        "stage training_code depends on src/cs_repro/models, which does not exist")


def test_bytecode_caches_do_not_change_code_deps():
    dvc = Path(sys.executable).with_name("dvc")
    ignored = subprocess.run([str(dvc), "check-ignore", "src/cs_repro/models/__pycache__/lenet.cpython-311.pyc"],
                             cwd=REPO, capture_output=True, text=True)
    kept = subprocess.run([str(dvc), "check-ignore", "src/cs_repro/models/lenet.py"], cwd=REPO, capture_output=True)
    assert ignored.returncode == 0 and kept.returncode == 1


def test_analytics_are_off_and_hydra_is_on():
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "enabled = true" in config


# --- parameter parsing --------------------------------------------------------------------------


def _quick_with(quick: dict, path: str, value) -> dict:
    raw = copy.deepcopy(quick)
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return raw


def test_lambda_written_by_dvc_as_a_string_is_read_as_a_float(quick, tmp_path):
    path = tmp_path / "params.yaml"
    # What `dvc exp run -S lambda=1e-9` may leave in params.yaml: PyYAML reads 1e-09 as a string.
    path.write_text(yaml.safe_dump(quick).replace("lambda: 1.0e-08", "lambda: 1e-09"))
    assert yaml.safe_load(path.read_text())["lambda"] == "1e-09"
    assert load_params(path).lambda_ == 1e-9


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("lambda", "small", r"^lambda must be a number, got 'small'$"),
        ("lambda", -1.0, r"^lambda=-1.0 must be >= 0.0$"),
        ("networks.lenet300_100.epochs", -2, r"epochs=-2 must be >= 1"),
        ("sweep.s0", [], r"^sweep.s0 is empty"),
        ("sweep.seeds", [0, 0], r"must not repeat"),
        ("networks.lenet300_100.model", "resnet9000", r"unknown model 'resnet9000'; allowed: .*lenet300_100"),
        ("networks.lenet300_100.dataset", "svhn", r"unknown dataset 'svhn'; allowed: cifar10"),
        ("profile", "huge", r"profile='huge' is not allowed"),
        ("cs.clamp_rule", "mine", r"cs.clamp_rule='mine' is not allowed; choose one of: paper, released"),
        ("imp.prune_fraction", 1.5, r"imp.prune_fraction=1.5 must be < 1.0"),
    ],
)
def test_invalid_params_fail_with_one_line_naming_the_key(quick, path, value, message):
    with pytest.raises(UserError, match=message) as caught:
        params_from_dict(_quick_with(quick, path, value))
    assert "\n" not in str(caught.value)


def test_unknown_key_is_named(quick):
    raw = copy.deepcopy(quick)
    raw["cs"]["temperature"] = 5
    with pytest.raises(UserError, match=r"unknown key cs.temperature; allowed keys here: beta_final"):
        params_from_dict(raw)
    # a params file from before a key moved says where its setting lives now
    raw = copy.deepcopy(quick)
    raw["random_control"] = {"enabled": False}
    with pytest.raises(UserError, match=r"^random_control has moved: set controls.random \(was random_control.enabled\)"):
        params_from_dict(raw)
    raw = copy.deepcopy(quick)
    raw["baselines"]["l0_penalty"] = [1e-4]
    with pytest.raises(UserError, match=r"^baselines.l0_penalty has moved: set l0.penalties instead$"):
        params_from_dict(raw)
    raw = copy.deepcopy(quick)
    raw["imp"]["continue_levels"] = 18
    with pytest.raises(UserError, match=r"^imp.continue_levels has moved: set imp_c.levels"):
        params_from_dict(raw)


def test_unknown_profile_is_named():
    with pytest.raises(UserError, match=r"unknown profile 'huge'; choose one of: extended, frankle, imagenet, paper, quick"):
        compose_profile("huge", conf_dir=REPO / "conf")


def test_params_listing_shows_the_current_value_next_to_the_default(quick, tmp_path, monkeypatch):
    """`cs-repro params` lists what params.yaml holds, not only the code defaults, and marks what differs."""
    from typer.testing import CliRunner

    from cs_repro.cli import app

    monkeypatch.chdir(tmp_path)
    quick = dict(quick, **{"lambda": 3e-9})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(quick))
    result = CliRunner().invoke(app, ["params"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert lines["lambda"][1:4] == ["*", "3e-09", "1e-08"]
    epochs = quick["networks"]["lenet5"]["epochs"]
    assert lines["networks.lenet5.epochs"][1:4] == ["*", str(epochs), "10"]
    assert lines["networks.lenet5.batch_size"][1:3] == ["128", "128"]  # unchanged: no mark
    assert "networks.<name>.epochs" not in lines  # one line per network that params.yaml holds
    # without a params file: the defaults, and it says so
    (tmp_path / "params.yaml").unlink()
    result = CliRunner().invoke(app, ["params"])
    assert result.output.startswith("(params.yaml not found: defaults only)")
    assert "networks.<name>.epochs" in result.output


def test_the_cpu_section_pins_threads_and_flushes_denormals_in_a_training_stage(tiny_params):
    import torch

    from cs_repro.stage_cli import training_device

    threads = torch.get_num_threads()
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    try:
        training_device(tiny_params({"cpu": {"threads": 1, "flush_denormals": True}}), "cpu")
        assert torch.get_num_threads() == 1
        assert (tiny * 1.0).item() == 0.0  # flushed (this x86 CPU supports it)
        torch.set_flush_denormal(False)
        training_device(tiny_params({"cpu": {"threads": 2, "flush_denormals": False}}), "cpu")
        assert torch.get_num_threads() == 2 and (tiny * 1.0).item() > 0.0
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def test_evaluate_names_a_pipeline_dvc_cannot_read_in_one_line(tmp_path):
    """evaluate reads only the runs a pipeline declares; where DVC cannot read that pipeline (a dvc.yaml
    outside a DVC project, a folder that does not exist) it stops with one line, not a traceback."""
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "runs").mkdir()
    for extra, named in (([], "."), (["--pipeline", str(tmp_path / "missing")], str(tmp_path / "missing"))):
        result = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), "--params",
                                 str(REPO / "params.yaml"), *extra], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot read the stages of {named}: ")
        assert "Traceback" not in result.stderr
