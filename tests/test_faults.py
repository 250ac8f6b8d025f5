"""Fault injection: what a multi-day run meets (malformed params, bad tickets, bad data, divergence, kills,
code changes between kill and resume) must end in one clear line or in byte-identical results.

Runs on its own: `pytest tests/test_faults.py` (the end-to-end kills are marked slow).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cs_repro import fingerprint
from cs_repro.cli import app
from cs_repro.errors import UserError
from cs_repro.io import atomic_write_text, remove_stale_temporaries
from cs_repro.methods.cs import run_cs_search
from cs_repro.methods.imp import run_imp
from cs_repro.methods.retrain import TicketRetrain
from cs_repro.profiles import compose_profile
from cs_repro.tickets import TICKET_FORMAT, load_ticket
from cs_repro.train import TrainingLoop

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
QUICK = compose_profile("quick", conf_dir=REPO / "conf")


def _cli(command: str, *args: str):
    """A stage (stages/<command>.py) or a `cs-repro` command, in this process."""
    from conftest import stage_command

    if (REPO / "stages" / f"{command}.py").exists():
        return CliRunner().invoke(stage_command(command), list(args))
    return CliRunner().invoke(app, [command, *args])


def _one_clear_line(result, *needles: str) -> str:
    """Exit status not 0, exactly one line on stderr naming every needle, and no traceback anywhere."""
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line[:2].isdigit()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- malformed params: one line naming the key, before anything runs -------------------------------------

def _set(raw: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


_DELETE = object()
NET = "networks.lenet300_100"

# (key to set, value, what the error line must name)
MALFORMED = [
    ("lambda", -1.0, "lambda"),
    ("lambda", "abc", "lambda"),
    ("lambda", None, "lambda"),
    (f"{NET}.lr", 0, f"{NET}.lr"),
    (f"{NET}.lr", "fast", f"{NET}.lr"),
    (f"{NET}.epochs", 0, f"{NET}.epochs"),
    (f"{NET}.epochs", 2.5, f"{NET}.epochs"),
    (f"{NET}.batch_size", -3, f"{NET}.batch_size"),
    (f"{NET}.model", "resnet21", f"{NET}.model"),
    (f"{NET}.dataset", "imagenet", f"{NET}.dataset"),
    (f"{NET}.momentum", 1.5, f"{NET}.momentum"),
    (f"{NET}.nesterov", "yes", f"{NET}.nesterov"),
    (f"{NET}.prunable", "fc1.weight", f"{NET}.prunable"),
    (f"{NET}.warmup", 3, "warmup"),
    ("cs.rounds", 0, "cs.rounds"),
    ("cs.clamp_rule", "sometimes", "cs.clamp_rule"),
    ("cs.mask_scale", "double", "cs.mask_scale"),
    ("imp.prune_fraction", 1.0, "imp.prune_fraction"),
    ("imp.levels", 0, "imp.levels"),
    ("imp_c.networks", ["vgg16"], "imp_c.networks"),
    ("imp_c.levels", 0, "imp_c.levels"),
    ("controls.reinit", "maybe", "controls.reinit"),
    ("sweep.seeds", [], "sweep.seeds"),
    ("sweep.seeds", [0, 0], "sweep.seeds"),
    ("sweep.seeds", [-1], "sweep.seeds"),
    ("sweep.seeds", [18446744073709551616], "sweep.seeds"),
    ("sweep.seeds", "0", "sweep.seeds"),
    ("sweep.networks", "lenet300_100", "sweep.networks"),
    ("sweep.networks", ["vgg19"], "sweep.networks"),
    ("sweep.s0", ["abc"], "sweep.s0"),
    ("sweep.datasets", [], "sweep.datasets"),
    ("ablations.s0", [0.5], "ablations.s0"),
    ("baselines.networks", ["lenet7"], "baselines.networks"),
    ("baselines.sparsities", [1.5], "baselines.sparsities"),
    ("slimming.networks", ["lenet5"], "slimming.networks"),
    ("gmp.start", 0.9, "gmp.start"),
    ("controls.imp_levels", [25], "controls.imp_levels"),
    ("controls.imp_levels", [0], "controls.imp_levels"),
    ("data.verify_checksums", "no", "data.verify_checksums"),
    ("profile", "huge", "profile"),
    ("surprise", 1, "surprise"),
    ("networks", {}, "networks"),
    ("cs", _DELETE, None),  # a missing section takes its defaults: valid
    # ranges the stages rely on, checked before anything trains
    ("lambda", 1e308, "lambda"),
    ("lambda", 1e38, "lambda"),
    ("sweep.s0", [1e308], "sweep.s0"),
    ("sweep.s0", [-100.0], "sweep.s0"),
    (f"{NET}.lr", 1e39, f"{NET}.lr"),
    (f"{NET}.rewind_iteration", 999999, f"{NET}.rewind_iteration"),
    (f"{NET}.batch_size", 100000, f"{NET}.batch_size"),
    (f"{NET}.val_size", 60000, f"{NET}.val_size"),
    ("imp.levels", 1000, "imp.levels"),
    ("slimming.networks", ["lenet300_100"], "slimming.networks"),
]


@pytest.mark.parametrize("key, value, names", MALFORMED, ids=[f"{k}={v!r}"[:40] for k, v, _ in MALFORMED])
def test_malformed_params_fail_in_one_line_naming_the_key(tmp_path, monkeypatch, key, value, names):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set(QUICK, key, value)))
    result = _cli("params", "--check", str(path))
    if names is None:
        assert result.exit_code == 0, result.output
        return
    _one_clear_line(result, names)
    # ... and a stage fails the same way before it creates anything
    result = _cli("cs_search", "--network", "lenet300_100", "--s0=0", "--seed", "0", "--out", "runs/x",
                  "--params", str(path))
    _one_clear_line(result, names)
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".cache").exists()


MALFORMED_OVERRIDES = [
    (["lambda=abc"], "lambda"),
    (["sweep.s0=[abc]"], "sweep.s0"),
    (["sweep.seeds=[-5]"], "sweep.seeds"),
    (["gmp.start=0.9", "gmp.end=0.5"], "gmp.start"),
    (["ablations.s0=[0.5]"], "ablations.s0"),
    (["cs.rounds=0"], "cs.rounds"),
]


@pytest.mark.parametrize("overrides, names", MALFORMED_OVERRIDES, ids=[" ".join(o) for o, _ in MALFORMED_OVERRIDES])
def test_malformed_overrides_fail_in_one_line_and_write_nothing(tmp_path, monkeypatch, overrides, names):
    """`dvc exp run -S key=value` composes params the way `cs-repro use-profile quick key=value` does."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "params.yaml"
    _one_clear_line(_cli("use-profile", "quick", *overrides, "--out", str(out)), names)
    assert not out.exists()


# What a stage would find out only after training for a while, said by the check with the numbers it rests on
# (the quick profile: 16,000 training images in batches of 128, 6 epochs a round; 266,200 prunable weights in 3
# tensors).
KNOWN_TO_THE_STAGES = [
    ({f"{NET}.rewind_iteration": 999999}, "lies beyond the first round's 750 optimiser steps", "choose at most 750"),
    ({f"{NET}.rewind_iteration": 750}, None, None),
    ({f"{NET}.train_subset": 2000, f"{NET}.batch_size": 100000}, "larger than the training set (2,000 images)",
     f"{NET}.batch_size"),
    ({"imp.levels": 1000}, "goes past level 52, where IMP keeps 2 of lenet300_100's 266,200 prunable weights",
     "set imp.levels to at most 51"),
    ({"imp.levels": 51}, None, None),
    ({"imp_c.networks": ["lenet300_100"], "imp_c.levels": 60}, "imp_c.levels=60 goes past level 52",
     "set imp_c.levels to at most 51"),
    ({"slimming.networks": ["lenet300_100"]}, "lenet300_100 has no BatchNorm channels", "slimming.networks"),
    ({"lambda": 1e38}, "makes CS's penalty on lenet300_100", "overflow float32"),
    ({"sweep.s0": [0.0, -100.0]}, "s0=-100 is below -88", "overflows float32"),
]


@pytest.mark.parametrize("changes, first, second", KNOWN_TO_THE_STAGES,
                         ids=[",".join(f"{k}={v}" for k, v in c.items())[:50] for c, _, _ in KNOWN_TO_THE_STAGES])
def test_the_check_knows_what_the_stages_know(tmp_path, changes, first, second):
    raw = QUICK
    for key, value in changes.items():
        raw = _set(raw, key, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = _cli("params", "--check", str(path))
    if first is None:  # the largest value that works passes
        assert result.exit_code == 0, result.output
        return
    _one_clear_line(result, first, second)


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path):
    text = yaml.safe_dump(QUICK, sort_keys=False)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("lambda:")) + 1
    nested = next(i for i, line in enumerate(lines) if line.strip().startswith("lr:")) + 1
    path = tmp_path / "params.yaml"
    path.write_text(text + "lambda: 1.0e-06\n")  # PyYAML would silently take this one
    _one_clear_line(_cli("params", "--check", str(path)), f"lambda appears twice (lines {first} and {len(lines) + 1})")
    lines.insert(nested, lines[nested - 1].replace("lr:", "lr: 0.5 #"))
    path.write_text("\n".join(lines) + "\n")
    _one_clear_line(_cli("params", "--check", str(path)),
                    f"networks.lenet300_100.lr appears twice (lines {nested} and {nested + 1})")


def test_more_cpu_threads_than_cores_is_a_warning_naming_the_setting(tmp_path):
    cores = len(os.sched_getaffinity(0))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set(QUICK, "cpu.threads", cores + 1)))
    result = _cli("params", "--check", str(path))
    assert result.exit_code == 0, result.output
    assert f"warning: cpu.threads={cores + 1} is more than the {cores} cores" in result.stderr
    assert "conf/profile/<profile>.yaml" in result.stderr
    path.write_text(yaml.safe_dump(_set(QUICK, "cpu.threads", cores)))
    assert "warning" not in _cli("params", "--check", str(path)).stderr


def test_dvc_writes_small_lambdas_as_strings_and_they_are_read_as_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set(QUICK, "lambda", "1e-09")))
    result = _cli("params", "--check", str(path))
    assert result.exit_code == 0, result.output


# --- tickets that do not fit their network --------------------------------------------------------------


def _bad_ticket(tmp_path: Path, good: Path, change) -> Path:
    raw = torch.load(good, weights_only=True)
    change(raw)
    path = tmp_path / "bad.pt"
    torch.save(raw, path)
    return path


BAD_TICKETS = {
    "no masks": (lambda raw: raw["masks"].clear(), "holds no masks"),
    "float masks": (lambda raw: raw["masks"].update({k: v.float() * 0.5 for k, v in raw["masks"].items()}),
                    "not a bool tensor"),
    "missing masks key": (lambda raw: raw.pop("masks"), "no 'masks' mapping"),
    "missing network": (lambda raw: raw["metadata"].pop("network"), "metadata lacks network"),
    "wrong shape": (lambda raw: raw["masks"].update({"fc1.weight": raw["masks"]["fc1.weight"][:, :10]}), "shape"),
    "not prunable here": (lambda raw: raw["masks"].update({"fc1.bias": torch.ones(300, dtype=torch.bool)}),
                          "fc1.bias"),
    "a layer left out": (lambda raw: raw["masks"].pop("fc3.weight"), "no mask for fc3.weight"),
    "another format": (lambda raw: raw.update(format="something/1"), TICKET_FORMAT),
}


@pytest.fixture(scope="module")
def imp_ticket(tmp_path_factory, prepared_fashion):
    """One real level-1 IMP ticket of the tiny LeNet-300-100 (trained once for the module)."""
    from conftest import tiny_params_dict

    from cs_repro.params import params_from_dict

    root = tmp_path_factory.mktemp("imp")
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "data" / "prepared" / "fashion_mnist.pt").symlink_to(prepared_fashion)
    raw = tiny_params_dict(epochs=2, lr_milestones=[1])
    raw["imp"]["levels"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_imp(params_from_dict(raw), "lenet300_100", 0, root / "imp", CPU, checkpoint_dir=None)
    finally:
        os.chdir(cwd)
    return root, root / "imp" / "tickets" / "level_01.pt"


@pytest.mark.parametrize("case", sorted(BAD_TICKETS))
def test_a_ticket_that_does_not_fit_is_one_line_and_trains_nothing(imp_ticket, tmp_path, monkeypatch, case):
    root, good = imp_ticket
    change, needle = BAD_TICKETS[case]
    bad = _bad_ticket(tmp_path, good, change)
    monkeypatch.chdir(root)
    result = _cli("retrain", "--tickets", str(bad), "--variants", "rewind", "--out", str(tmp_path / "out"),
                  "--checkpoint-dir", str(tmp_path / "ck"))
    _one_clear_line(result, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ck").exists()


def test_a_ticket_holding_code_is_refused_in_our_words(imp_ticket, tmp_path, monkeypatch):
    """weights_only refuses it; torch's own message goes on to advise loading with weights_only=False."""
    root, good = imp_ticket

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = _bad_ticket(tmp_path, good, lambda raw: raw["metadata"].update(note=Payload()))
    monkeypatch.chdir(root)
    result = _cli("retrain", "--tickets", str(bad), "--variants", "rewind", "--out", str(tmp_path / "out"),
                  "--checkpoint-dir", str(tmp_path / "ck"))
    line = _one_clear_line(result, "is refused: it refers to print, code or an object that a ticket may not hold")
    assert "weights_only" not in line and "Re-running" not in line
    assert not (tmp_path / "out").exists()


def test_a_good_ticket_loads(imp_ticket):
    _, good = imp_ticket
    assert load_ticket(good).metadata["level"] == 1


# --- divergence, bad data --------------------------------------------------------------------------------


def test_a_loss_that_blows_up_without_nan_stops_the_search_and_writes_no_ticket(workspace, tiny_params):
    # CS at s0 = 0.5 on the BN-free LeNet at lr 0.05: the kept gates grow to 1/sigmoid(0.5) per layer as the
    # temperature rises; the loss goes 1.09 -> 21.9 (Intel Xeon) or 16.3 (AMD EPYC)
    # in the second epoch, with no NaN.
    params = tiny_params()
    with pytest.raises(UserError, match=r"diverged in round 1/3 epoch 2/3: the training loss [12]\d\.\d+ is over 4x"):
        run_cs_search(params, "lenet300_100", 0.5, 0, workspace / "cs", CPU, checkpoint_dir=workspace / "ck")
    assert not (workspace / "cs" / "ticket.pt").exists() and not (workspace / "cs" / "metrics.json").exists()
    assert not list((workspace / "ck").glob("*.pt"))  # no checkpoint to resume into the same divergence


def test_a_nan_loss_names_its_epoch(workspace, tiny_params):
    params = tiny_params({"imp": {"levels": 1}}, lr=0.2, batch_size=50, epochs=2, lr_milestones=[])
    with pytest.raises(UserError, match=r"diverged in dense epoch 1/2: the training loss became nan"):
        run_imp(params, "lenet300_100", 0, workspace / "imp", CPU, checkpoint_dir=None)
    assert not (workspace / "imp" / "tickets").exists()


def test_a_dense_run_that_does_not_learn_fails_but_a_ticket_that_cannot_train_is_a_result(workspace, tiny_params):
    # Bad data: labels shuffled against the images. Nothing generalises; validation stays at chance.
    prepared = torch.load(workspace / "data" / "prepared" / "fashion_mnist.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    prepared["train_labels"] = prepared["train_labels"][torch.randperm(len(prepared["train_labels"]), generator=generator)]
    (workspace / "data" / "prepared" / "fashion_mnist.pt").unlink()
    torch.save(prepared, workspace / "data" / "prepared" / "fashion_mnist.pt")
    params = tiny_params({"imp": {"levels": 1}}, epochs=2, lr_milestones=[])
    with pytest.raises(UserError, match=r"diverged in dense epoch 2/2: validation accuracy ends the phase at .*"
                                        r"the network did not learn"):
        run_imp(params, "lenet300_100", 0, workspace / "imp", CPU, checkpoint_dir=None)
    assert TicketRetrain({}, None).must_learn(0) is False


# --- interrupted runs: resume, code changes, per-variant resume, leftovers ---------------------------------


def _interrupt_on_call(monkeypatch, hooks_class, call: int):
    original = hooks_class.end_epoch
    calls = {"n": 0}

    def interrupt(self, loop, phase, epoch):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, loop, phase, epoch)

    monkeypatch.setattr(hooks_class, "end_epoch", interrupt)
    return lambda: monkeypatch.setattr(hooks_class, "end_epoch", original)


def _count_epochs(monkeypatch) -> dict:
    counter = {"n": 0}
    original = TrainingLoop._run_epoch

    def counted(self, *args):
        counter["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(TrainingLoop, "_run_epoch", counted)
    return counter


def test_a_code_change_between_kill_and_resume_starts_over(workspace, tiny_params, monkeypatch, caplog):
    from cs_repro.methods.cs import CSSearch

    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "clean", CPU, checkpoint_dir=None)
    restore = _interrupt_on_call(monkeypatch, CSSearch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    restore()
    assert len(list((workspace / "ck").glob("*.pt"))) == 1
    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda: "another-program")
    monkeypatch.setattr("cs_repro.train.code_fingerprint", lambda: "another-program")
    epochs = _count_epochs(monkeypatch)
    with caplog.at_level("INFO", logger="cs_repro"):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    assert "was written by other code" in caplog.text and "starting over" in caplog.text
    assert epochs["n"] == 9  # all 3 rounds x 3 epochs trained again, nothing taken from the old checkpoint
    assert (workspace / "clean" / "metrics.json").read_bytes() == (workspace / "run" / "metrics.json").read_bytes()


def test_the_same_code_resumes(workspace, tiny_params, monkeypatch):
    from cs_repro.methods.cs import CSSearch

    params = tiny_params()
    restore = _interrupt_on_call(monkeypatch, CSSearch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    restore()
    epochs = _count_epochs(monkeypatch)
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    assert epochs["n"] == 9 - 3  # three finished epochs came from the checkpoint


@pytest.mark.parametrize("damage", [8, 4096], ids=["8 bytes", "4 KiB"])
def test_a_checkpoint_whose_bytes_changed_is_set_aside_and_the_run_gives_the_uninterrupted_bytes(
        workspace, tiny_params, monkeypatch, caplog, damage):
    """Bit rot on a shared file system: the bytes change in place, the length does not. Resuming from it gave
    another accuracy (8 bytes) or a false divergence (4 KiB); the digest check sets it aside instead."""
    from cs_repro.methods.cs import CSSearch

    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "clean", CPU, checkpoint_dir=None)
    ck = workspace / "ck"
    for attempt in range(2):  # damaged twice: the second damaged file replaces the first
        restore = _interrupt_on_call(monkeypatch, CSSearch, 4)
        with pytest.raises(KeyboardInterrupt):
            run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=ck)
        restore()
        (checkpoint,) = ck.glob("*.pt")
        data = bytearray(checkpoint.read_bytes())
        middle = len(data) // 2
        data[middle:middle + damage] = bytes(byte ^ 0xFF for byte in data[middle:middle + damage])
        checkpoint.write_bytes(bytes(data))
    assert [p.name for p in ck.glob("*.damaged")] == [checkpoint.name + ".damaged"]  # one per run, not one per try
    epochs = _count_epochs(monkeypatch)
    with caplog.at_level("INFO", logger="cs_repro"):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=ck)
    assert f"checkpoint {checkpoint} is damaged: its bytes changed after it was written" in caplog.text
    assert "resuming from" not in caplog.text
    assert epochs["n"] == 9  # nothing taken from it
    for name in ("metrics.json", "ticket.pt"):
        assert (workspace / "clean" / name).read_bytes() == (workspace / "run" / name).read_bytes()
    assert not list(ck.iterdir())  # the finished run took its damaged checkpoint with it


@pytest.mark.parametrize("call", [3, 5], ids=["after the dense run", "inside level 1"])
def test_a_resumed_imp_search_writes_the_same_bytes(workspace, tiny_params, monkeypatch, call):
    """The tickets' mask names came from the checkpoint after a resume and from the config otherwise: equal
    strings, but pickled once or twice, so the files differed in bytes (found by the image's docker-stop test)."""
    from cs_repro.methods.imp import IMPSearch

    params = tiny_params()
    run_imp(params, "lenet300_100", 0, workspace / "clean", CPU, checkpoint_dir=None)
    restore = _interrupt_on_call(monkeypatch, IMPSearch, call)
    with pytest.raises(KeyboardInterrupt):
        run_imp(params, "lenet300_100", 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    restore()
    epochs = _count_epochs(monkeypatch)
    run_imp(params, "lenet300_100", 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck")
    assert epochs["n"] == 4 * 3 - (call - 1)  # resumed, not started over
    files = sorted(p.relative_to(workspace / "clean") for p in (workspace / "clean").rglob("*")
                   if p.is_file() and "timing" not in p.name)
    assert len(files) == 5  # metrics.json and the four levels' tickets
    for name in files:
        assert (workspace / "clean" / name).read_bytes() == (workspace / "run" / name).read_bytes(), name


def test_an_emptied_tensor_is_named_at_the_level_it_empties(workspace, tiny_params, monkeypatch, caplog):
    """Global ranking can empty a tensor long before the params check's bound; the run says so at that level."""
    from cs_repro.methods.imp import IMPSearch

    original = IMPSearch.begin_phase

    def shrink_fc3_then_prune(self, loop, phase):
        if phase == 1:  # fc3's weights become the smallest: level 1 (20% pruned) takes all 1,000 of them
            dict(loop.model.named_parameters())["fc3.weight"].data.mul_(1e-9)
        original(self, loop, phase)

    monkeypatch.setattr(IMPSearch, "begin_phase", shrink_fc3_then_prune)
    with caplog.at_level("INFO", logger="cs_repro"):
        run_imp(tiny_params({"imp": {"levels": 2}}), "lenet300_100", 0, workspace / "imp", CPU, checkpoint_dir=None)
    warnings = [r.getMessage() for r in caplog.records if "with no weights" in r.getMessage()]
    assert len(warnings) == 1 and "level 1 leaves fc3.weight with no weights" in warnings[0], warnings


def test_dear_checkpoints_are_spaced_out_and_a_resume_from_an_older_one_gives_the_same_bytes(
        workspace, tiny_params, monkeypatch, caplog):
    """A checkpoint write that costs more than CHECKPOINT_BUDGET of the training waits for enough training
    (a VGG-16 CS state on a fast GPU); a kill then loses more epochs, never the result."""
    from cs_repro import train
    from cs_repro.methods.cs import CSSearch

    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "clean", CPU, checkpoint_dir=None)
    written, real_save = [], train.save_checkpoint

    def dear_save(state, path):  # a write of ~0.5 s: more than 2% of this tiny run's 9 epochs together
        time.sleep(0.5)
        written.append((state["position"]["phase"], state["position"]["next_epoch"]))
        real_save(state, path)

    monkeypatch.setattr(train, "save_checkpoint", dear_save)
    with caplog.at_level("INFO", logger="cs_repro"):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "spaced", CPU, checkpoint_dir=workspace / "ck1")
    assert written == [(0, 1), (3, 0)]  # after the first epoch (cost unknown yet), and the finished run's
    write_seconds = json.loads((workspace / "spaced" / "timing.json").read_text())["checkpoint_seconds"]
    assert len(write_seconds) == 2 and min(write_seconds) >= 0.5  # timing.json records each write
    assert "a checkpoint takes 0.5" in caplog.text and "writing one every 2" in caplog.text  # ~25 s of training
    assert (workspace / "clean" / "metrics.json").read_bytes() == (workspace / "spaced" / "metrics.json").read_bytes()

    written.clear()
    restore = _interrupt_on_call(monkeypatch, CSSearch, 5)  # Ctrl-C in the second round: last checkpoint epoch 1
    with pytest.raises(KeyboardInterrupt):
        run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck2")
    restore()
    assert written == [(0, 1)]
    epochs = _count_epochs(monkeypatch)
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "run", CPU, checkpoint_dir=workspace / "ck2")
    assert epochs["n"] == 9 - 1  # only the first epoch came from the checkpoint
    assert (workspace / "clean" / "metrics.json").read_bytes() == (workspace / "run" / "metrics.json").read_bytes()


def test_a_killed_multi_variant_retrain_resumes_each_variant_on_its_own(workspace, tiny_params, monkeypatch):
    from conftest import tiny_params_dict

    (workspace / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "cs", CPU, checkpoint_dir=None)
    ticket = str(workspace / "cs" / "ticket.pt")
    whole = _cli("retrain", "--tickets", ticket, "--variants", "rewind,reinit", "--out", "whole", "--checkpoint-dir", "ck1")
    assert whole.exit_code == 0, whole.output
    # killed in the second variant's second epoch (the first variant is finished)
    restore = _interrupt_on_call(monkeypatch, TicketRetrain, 3 + 2)
    killed = _cli("retrain", "--tickets", ticket, "--variants", "rewind,reinit", "--out", "again", "--checkpoint-dir", "ck2")
    assert killed.exit_code == 130
    restore()
    epochs = _count_epochs(monkeypatch)
    resumed = _cli("retrain", "--tickets", ticket, "--variants", "rewind,reinit", "--out", "again", "--checkpoint-dir", "ck2")
    assert resumed.exit_code == 0, resumed.output
    assert epochs["n"] == 3 - 1  # only the second variant's unfinished epochs; the first is not trained again
    for variant in ("rewind", "reinit"):
        assert (workspace / "whole" / variant / "metrics.json").read_bytes() == \
            (workspace / "again" / variant / "metrics.json").read_bytes()
    assert not list((workspace / "ck2").glob("*.pt"))  # the finished stage leaves no checkpoint behind


def test_leftover_temporaries_are_removed_and_files_honour_the_umask(tmp_path):
    target = tmp_path / "checkpoint.pt"
    leftover = tmp_path / ".checkpoint.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / ".other.pt.abc123.tmp"
    unrelated.write_bytes(b"another file's write")
    atomic_write_text("whole", target)
    assert target.read_text() == "whole" and not leftover.exists() and unrelated.exists()
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert remove_stale_temporaries(tmp_path / "other.pt") == [unrelated] and not unrelated.exists()


# --- real processes: kill -9 at an epoch and mid-write, dvc dying ---------------------------------------------

CS_ARGS = ["--network", "lenet300_100", "--s0=0", "--seed", "0"]
CS_STAGE = str(REPO / "stages" / "cs_search.py")


def _stage(workspace: Path, out: str, *, preamble: str = "", env: dict | None = None,
           wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """stages/cs_search.py in a fresh Python process (optionally with test code run first)."""
    code = textwrap.dedent(preamble) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{CS_STAGE!r}, *{CS_ARGS + ["--out", out]!r}]
        runpy.run_path({CS_STAGE!r}, run_name="__main__")
    """)
    command = [sys.executable, "-c", code]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if wait:
        return subprocess.run(command, cwd=workspace, env=full_env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, cwd=workspace, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def stage_workspace(workspace):
    from conftest import tiny_params_dict

    (workspace / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    return workspace


@pytest.mark.slow
def test_kill_9_at_an_epoch_and_during_a_checkpoint_write_then_resume_gives_the_same_bytes(stage_workspace):
    workspace = stage_workspace
    clean = _stage(workspace, "clean")
    assert clean.returncode == 0, clean.stderr
    # kill -9 right after the 4th epoch's checkpoint is complete
    at_epoch = _stage(workspace, "run", preamble="""
        import os, signal
        import cs_repro.train as train
        saved = train.TrainingLoop._save
        count = {"n": 0}
        def save_then_die(self, *args):
            saved(self, *args)
            count["n"] += 1
            if count["n"] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        train.TrainingLoop._save = save_then_die
    """)
    assert at_epoch.returncode == -signal.SIGKILL
    # kill -9 half-way through writing the next checkpoint: a temporary file is left behind
    mid_write = _stage(workspace, "run", preamble="""
        import os, signal
        import cs_repro.io as io
        real = io._atomic_write
        def die_half_way(path, write):
            if str(path).endswith(".pt") and ".cache" in str(path):
                def partial(stream):
                    stream.write(b"PK\\x03\\x04 half a checkpoint")
                    stream.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(path, partial)
            return real(path, write)
        io._atomic_write = die_half_way
    """)
    assert mid_write.returncode == -signal.SIGKILL
    assert list((workspace / ".cache" / "checkpoints").glob(".*.tmp"))
    resumed = _stage(workspace, "run")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "(phase 1, epoch 0)" in resumed.stderr  # round 2, its first epoch lost
    for name in ("metrics.json", "ticket.pt"):
        assert (workspace / "clean" / name).read_bytes() == (workspace / "run" / name).read_bytes()
    assert not list((workspace / ".cache" / "checkpoints").iterdir())  # no checkpoint, no leftover


@pytest.mark.slow
@pytest.mark.parametrize("shell", [None, "dash"])
def test_a_stage_stops_when_the_dvc_that_started_it_dies(stage_workspace, shell):
    """SIGKILL to the parent (standing in for `dvc`), started directly or through a shell that does not exec."""
    workspace = stage_workspace
    child = textwrap.dedent(f"""
        import runpy, sys, time
        sys.argv = [{CS_STAGE!r}, *{CS_ARGS + ["--out", "run"]!r}]
        import cs_repro.train as train
        original = train.TrainingLoop._run_epoch
        def slow_epoch(self, *args):
            time.sleep(1.0)
            return original(self, *args)
        train.TrainingLoop._run_epoch = slow_epoch
        runpy.run_path({CS_STAGE!r}, run_name="__main__")
    """)
    child_command = [sys.executable, "-c", child]
    if shell:
        import shlex
        child_command = [shell, "-c", " ".join(shlex.quote(part) for part in child_command) + "; echo done"]
    parent = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen({child_command!r}, stderr=open("child.log", "w"))
        open("child.pid", "w").write(str(child.pid))
        time.sleep(600)
    """)
    env = {**os.environ, "DVC_STAGE": "cs_search@test", "OMP_NUM_THREADS": "1"}
    dvc = subprocess.Popen([sys.executable, "-c", parent], cwd=workspace, env=env)
    deadline = time.monotonic() + 120
    while "round 1/3 epoch 1/3" not in _read(workspace / "child.log") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "epoch 1/3" in _read(workspace / "child.log")
    dvc.kill()
    dvc.wait()
    stopped = time.monotonic() + 30
    while "interrupted" not in _read(workspace / "child.log") and time.monotonic() < stopped:
        time.sleep(0.2)
    log = _read(workspace / "child.log")
    assert "has exited: stopping" in log and "interrupted: progress up to the last finished epoch is kept" in log
    assert not (workspace / "run" / "metrics.json").exists()  # it wrote nothing dvc.lock would not record


@pytest.mark.slow
def test_sigterm_stops_a_stage_like_ctrl_c_keeping_its_finished_epochs(stage_workspace):
    """What `docker stop` (through tini -g), `kill` or a SLURM time limit sends."""
    workspace = stage_workspace
    stage = _stage(workspace, "run", wait=False, preamble="""
        import time
        import cs_repro.train as train
        original = train.TrainingLoop._run_epoch
        def slow_epoch(self, *args):
            time.sleep(1.0)
            return original(self, *args)
        train.TrainingLoop._run_epoch = slow_epoch
    """)
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = stage.stderr.readline()
        lines.append(line)
        if "epoch 2/3" in line or not line:
            break
    stage.send_signal(signal.SIGTERM)
    rest = stage.communicate(timeout=60)[1]
    assert stage.returncode == 130, "".join(lines) + rest
    assert "interrupted: progress up to the last finished epoch is kept" in rest
    checkpoints = workspace / ".cache" / "checkpoints"
    assert len(list(checkpoints.glob("*.pt"))) == 1 and not list(checkpoints.glob(".*.tmp"))
    assert not (workspace / "run" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["interrupted", "finished"])
def test_a_sigterm_while_the_stage_exits_changes_nothing(stage_workspace, when):
    """A second SIGTERM (repeated by `docker stop`/SLURM, or sent by the watchdog once dvc has gone) that arrives
    while Python runs its exit handlers printed a traceback after the clean line."""
    workspace = stage_workspace
    stage = _stage(workspace, "run", wait=False, preamble=f"""
        import atexit, os, signal, time
        atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2)))
        import cs_repro.train as train
        original = train.TrainingLoop._run_epoch
        def slow_epoch(self, *args):
            time.sleep({1.0 if when == "interrupted" else 0.0})
            return original(self, *args)
        train.TrainingLoop._run_epoch = slow_epoch
    """)
    if when == "interrupted":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = stage.stderr.readline()
            if "epoch 2/3" in line or not line:
                break
        stage.send_signal(signal.SIGTERM)
    rest = stage.communicate(timeout=120)[1]
    assert "Traceback" not in rest and "Exception ignored" not in rest, rest
    if when == "interrupted":
        assert stage.returncode == 130 and rest.strip().splitlines()[-1].startswith("interrupted: progress"), rest
    else:
        assert stage.returncode == 0 and (workspace / "run" / "metrics.json").exists(), rest


@pytest.mark.slow
def test_an_emptied_fan_out_under_dvc_exp_run_is_one_line_naming_the_key(tmp_path):
    """`dvc exp run` does not go through make's params check; with no seeds no stage that loads params ran,
    and DVC failed on a missing runs/. Stage `params_check` runs whenever params.yaml changes."""
    from test_pipeline_run import TINY_OVERRIDES, make_pipeline_repo, run, tiny_quick_params

    repo = make_pipeline_repo(tmp_path / "repo", tiny_quick_params())
    run("dvc", "repro", "prepare@fashion_mnist", "training_code", "params_check", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "head stages", cwd=repo)
    overrides = [arg for override in TINY_OVERRIDES for arg in ("-S", override)]
    result = run("dvc", "exp", "run", *overrides, "-S", "sweep.seeds=[]", cwd=repo, check=False)
    assert result.returncode != 0
    ours = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert ours == ["error: sweep.seeds is empty: list at least one value"], result.stdout + result.stderr
    assert "failed to reproduce 'params_check'" in result.stderr and "No such file" not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_seed_too_large_for_torch_is_one_line(stage_workspace):
    result = _cli("cs_search", "--network", "lenet300_100", "--s0=0", "--seed", "18446744073709551616",
                  "--out", "runs/x")
    _one_clear_line(result, "18446744073709551616", "is not a seed")
    assert not (stage_workspace / "runs").exists()


def test_the_fault_table_is_large_enough():
    assert len(MALFORMED) + len(MALFORMED_OVERRIDES) >= 30


def test_a_diverged_control_is_a_result_while_a_diverged_ticket_retraining_stops(workspace, tiny_params):
    from cs_repro.evaluation import diverged_controls, read_runs
    from cs_repro.methods.retrain import retrain_ticket
    from cs_repro.report import Aggregates, tables
    from cs_repro.results import complete_row
    from cs_repro.tickets import Ticket, save_ticket

    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "runs" / "cs", CPU, checkpoint_dir=None)
    # The released scale at s0 = -4 multiplies every kept weight by 1/sigmoid(-4) = 55.6: on the BN-free LeNet
    # at lr 0.05 that retraining blows up, while the plain ticket trains.
    ticket = load_ticket(workspace / "runs" / "cs" / "ticket.pt")
    scaled = workspace / "runs" / "scaled" / "ticket.pt"
    save_ticket(Ticket(ticket.masks, ticket.rewind_state, {**ticket.metadata, "s0": -4.0}), scaled)
    out = workspace / "runs" / "retrain"
    ran = retrain_ticket(params, scaled, ["rewind_released_scale", "rewind"], out, CPU, checkpoint_dir=workspace / "ck")
    assert ran == ["rewind_released_scale", "rewind"]  # the stage went on after the control diverged
    diverged = json.loads((out / "rewind_released_scale" / "metrics.json").read_text())
    assert diverged["result_rows"] == [] and diverged["variant"] == "rewind_released_scale"
    assert diverged["diverged"]["epoch"] >= 1 and "training loss" in diverged["diverged"]["reason"]
    assert json.loads((out / "rewind" / "metrics.json").read_text())["final"]["test_accuracy"] > 0.5
    assert not list((workspace / "ck").glob("*.pt"))
    # evaluation lists it, and the controls table shows it in the ticket's row
    (entry,) = diverged_controls(read_runs(workspace / "runs"))
    assert entry == {"network": "lenet300_100", "method": "cs", "setting": "s0=0", "variant": "rewind_released_scale",
                     "seed": 0, "epoch": diverged["diverged"]["epoch"], "reason": diverged["diverged"]["reason"]}
    rows = json.loads((out / "rewind" / "metrics.json").read_text())["result_rows"]
    completed = [complete_row(r, network="lenet300_100", dataset="fashion_mnist", search_seconds=1.0,
                              cost={"params_total": 10, "params_nonzero": 5, "flops_dense": 10, "flops_nonzero": 5})
                 for r in rows]
    table = tables.controls_table(Aggregates(completed), [entry])
    (cell,) = table.cells
    assert cell[table.headers.index("Released mask scale (%)")] == f"diverged at epoch {entry['epoch']} (seed 0)"
    # the ticket's own retraining from the rewind point is the main result: a divergence there stops the stage
    with pytest.raises(UserError, match=r"diverged in .*nothing was written"):
        retrain_ticket(tiny_params(lr=50.0), scaled, ["rewind"], workspace / "runs" / "main", CPU, checkpoint_dir=None)
    assert not (workspace / "runs" / "main" / "rewind" / "metrics.json").exists()
