"""The reviewers' baselines and ablations: L0 gates, GMP, one-shot magnitude pruning, random-mask controls,
CS ablations; closed-form checks, exact counts, resume, and result rows that the evaluation accepts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from cs_repro import run as ex
from cs_repro.errors import UserError
from cs_repro.evaluation import collect_rows
from cs_repro.methods.cs import run_cs_search
from cs_repro.methods.cs_ablations import CS_ABLATIONS, run_cs_ablation
from cs_repro.methods.gmp import GMPPruning, Schedule, kept_at, run_gmp, run_gmp_cs_layers
from cs_repro.methods.imp import run_imp
from cs_repro.methods.l0 import (BETA, GAMMA, ZETA, HardConcreteGate, L0Config, L0Search, deterministic_gates,
                                 prob_nonzero, prob_one, run_l0_search, sample_gates)
from cs_repro.methods.magnitude import run_magnitude, run_magnitude_dense
from cs_repro.methods.random_masks import random_generator, random_masks_like
from cs_repro.methods.retrain import TicketRetrain, chosen_variants, retrain_ticket, retrain_tickets, run_retrain
from cs_repro.params import params_from_dict
from cs_repro.profiles import compose_profile
from cs_repro.report.rows import as_rows
from cs_repro.tickets import load_ticket

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _assert_same_run(a: Path, b: Path) -> None:
    """Byte-identical metrics.json but for the output folder named in the rows' ticket_file."""
    text_b = (b / "metrics.json").read_text().replace(str(b), str(a))
    assert (a / "metrics.json").read_text() == text_b


# --- L0 gates: closed forms -------------------------------------------------------------------------


LOG_ALPHAS = (-3.0, -1.0, 0.0, 0.7, 2.5)


def _expected_gate(log_alpha: float, points: int = 200_000) -> float:
    """E[z] by the midpoint rule over u in (0, 1) (z is a monotone function of u)."""
    u = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return float(sample_gates(torch.full((points,), log_alpha, dtype=torch.float64), u).mean())


@pytest.mark.parametrize("log_alpha", LOG_ALPHAS)
def test_hard_concrete_gate_statistics_match_the_closed_forms(log_alpha):
    n = 200_000
    gate = HardConcreteGate(torch.Size([n]), log_alpha, L0Config(penalty=0.0))
    gate.generator = torch.Generator().manual_seed(11)
    gate.train()
    with torch.no_grad():
        z = gate.gates().double()
    la = torch.tensor(log_alpha, dtype=torch.float64)
    p_nonzero = float(prob_nonzero(la))
    p_one = float(prob_one(la))
    # P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)), independently of the helper:
    assert p_nonzero == pytest.approx(1 / (1 + math.exp(-(log_alpha - BETA * math.log(-GAMMA / ZETA)))), rel=1e-12)
    for empirical, p in ((float((z > 0).double().mean()), p_nonzero), (float((z == 1).double().mean()), p_one)):
        assert abs(empirical - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12
    # The mean gate against the numerically integrated expectation (z in [0, 1]: sd <= 1/2).
    assert abs(float(z.mean()) - _expected_gate(log_alpha)) <= 5 * 0.5 / math.sqrt(n)
    assert ((z >= 0) & (z <= 1)).all()


def test_deterministic_gate_and_binary_mask():
    la = torch.tensor([-5.0, math.log(-GAMMA / ZETA) - 1e-4, math.log(-GAMMA / ZETA) + 1e-4, 0.0, 5.0])
    z = deterministic_gates(la)
    assert torch.allclose(z, (torch.sigmoid(la) * (ZETA - GAMMA) + GAMMA).clamp(0, 1))
    gate = HardConcreteGate(torch.Size([5]), 0.0, L0Config(penalty=0.0))
    with torch.no_grad():
        gate.log_alpha.copy_(la)
    gate.eval()
    assert torch.equal(gate.binary_mask(), torch.tensor([False, False, True, True, True]))
    assert torch.equal(gate.binary_mask(), gate.gates() > 0)
    assert z[-1] == 1.0 and z[0] == 0.0


def test_l0_noise_is_seeded_per_epoch():
    from types import SimpleNamespace

    from cs_repro.methods.l0 import L0Gates

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    gates = L0Gates.attach(model, ["0.weight"], L0Config(penalty=0.0))
    hooks = L0Search(gates, L0Config(penalty=0.0))
    loop = SimpleNamespace(seed=3, device=CPU)
    draws = []
    for epoch in (0, 1, 0):
        hooks.begin_epoch(loop, 0, epoch)
        draws.append(gates.parts["0.weight"].gates().detach().clone())
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


# --- GMP: the cubic schedule ------------------------------------------------------------------------


def test_gmp_schedule_formula():
    schedule = Schedule.build(start=0.25, end=0.75, frequency=7, total_steps=80)
    assert (schedule.t0, schedule.dt, schedule.n) == (20, 7, 5)
    assert schedule.steps() == [27, 34, 41, 48, 55]
    for step in schedule.steps():
        expected = 0.9 + (0.0 - 0.9) * (1 - (step - 20) / (5 * 7)) ** 3
        assert schedule.sparsity(step, 0.9) == pytest.approx(expected)
    assert schedule.sparsity(55, 0.9) == 0.9 and schedule.sparsity(10, 0.9) == 0.0


def test_gmp_follows_the_cubic_schedule_and_ends_exactly_at_the_target(workspace, tiny_params):
    params = tiny_params({"gmp": {"start": 0.0, "end": 0.67, "frequency": 6}})
    target = 0.9
    result = run_gmp(params, "lenet300_100", target, 0, workspace / "gmp", CPU, checkpoint_dir=None)
    doc = _metrics(workspace / "gmp")
    events = doc["pruning_steps"]
    total = result.metadata["prunable_count"]
    schedule = Schedule.build(0.0, 0.67, 6, 3 * (2000 // 100))  # 3 epochs of 20 steps: t0 = 0, span 40
    assert [e["step"] for e in events] == schedule.steps() and len(events) == schedule.n
    for event in events:  # counted from the masks at every pruning step
        assert event["remaining_count"] == kept_at(schedule.sparsity(event["step"], target), total)
    assert events[-1]["remaining_count"] == round((1 - target) * total)
    # The final network: exactly the target, and its pruned weights are exactly zero.
    assert result.metadata["remaining_count"] == round((1 - target) * total)
    for name, mask in result.masks.items():
        assert (result.rewind_state[name][~mask] == 0).all()
    assert [row["remaining_weights"] for row in doc["epochs"]][-1] == pytest.approx(1 - target, abs=1 / total)


def test_gmp_per_layer_targets_are_met_exactly_per_layer(workspace, tiny_params):
    params = tiny_params({"gmp": {"start": 0.0, "end": 0.34, "frequency": 5}})
    targets = {"fc1.weight": 0.95, "fc2.weight": 0.6, "fc3.weight": 0.2}
    model, names = ex.make_model(params.network("lenet300_100"), 0, CPU)
    assert sorted(names) == sorted(targets)
    result = run_gmp(params, "lenet300_100", 0.9, 0, workspace / "gmp", CPU, checkpoint_dir=None,
                        layer_targets=targets, method="gmp_cs_layers", setting="test")
    for name, mask in result.masks.items():
        assert int(mask.sum()) == round((1 - targets[name]) * mask.numel())


def _interrupted_then_resumed(monkeypatch, hooks_class, run) -> None:
    """`run(folder, checkpoints)` once whole, once killed (Ctrl-C) after two epochs and run again: the
    resumed run must end with the same files as the whole one."""
    run("whole", "ck1")
    original = hooks_class.end_epoch
    calls = {"n": 0}

    def interrupt_after_two_epochs(self, loop, phase, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, loop, phase, epoch)

    monkeypatch.setattr(hooks_class, "end_epoch", interrupt_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        run("resumed", "ck2")
    monkeypatch.setattr(hooks_class, "end_epoch", original)
    run("resumed", "ck2")


def test_gmp_resumes_to_identical_metrics(workspace, tiny_params, monkeypatch):
    params = tiny_params({"gmp": {"start": 0.0, "end": 0.67, "frequency": 6}})
    _interrupted_then_resumed(monkeypatch, GMPPruning, lambda folder, checkpoints: run_gmp(
        params, "lenet300_100", 0.8, 0, workspace / folder, CPU, checkpoint_dir=workspace / checkpoints))
    _assert_same_run(workspace / "whole", workspace / "resumed")


def test_released_scale_retraining_resumes_to_identical_metrics(workspace, tiny_params, monkeypatch):
    # A resume must re-register the scaled gradient hooks without scaling the checkpoint's weights again.
    params = tiny_params()
    run_cs_search(params, "lenet300_100", 0.0, 0, workspace / "cs", CPU, checkpoint_dir=None)
    _interrupted_then_resumed(monkeypatch, TicketRetrain, lambda folder, checkpoints: run_retrain(
        params, workspace / "cs" / "ticket.pt", "rewind_released_scale", workspace / folder, CPU,
        checkpoint_dir=workspace / checkpoints))
    _assert_same_run(workspace / "whole", workspace / "resumed")


# --- random-mask controls -----------------------------------------------------------------------------


def test_random_masks_keep_exactly_the_layerwise_counts():
    generator = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(30, 20, generator=generator) > 0.7, "b": torch.rand(50, generator=generator) > 0.1,
             "c": torch.zeros(7, dtype=torch.bool), "d": torch.ones(3, 3, dtype=torch.bool)}
    random = random_masks_like(masks, random_generator(5))
    for name in masks:
        assert random[name].shape == masks[name].shape and random[name].dtype == torch.bool
        assert int(random[name].sum()) == int(masks[name].sum())
    assert not torch.equal(random["a"], masks["a"])
    again = random_masks_like(masks, random_generator(5))
    assert all(torch.equal(random[n], again[n]) for n in masks)


# --- end to end: every method writes result rows the evaluation accepts --------------------------------


def test_every_baseline_writes_result_rows_that_evaluation_accepts(workspace, tiny_params):
    small = dict(epochs=2, lr_milestones=[1], train_subset=1000, test_subset=500, val_size=200)
    params = tiny_params({"l0": {"gate_lr": 0.3, "droprate_init": 0.7, "penalties": [3e-3]},
                          "gmp": {"start": 0.0, "end": 1.0, "frequency": 4},
                          "baselines": {"sparsities": [0.9]}, "ablations": {"s0": [0.0]}}, **small)
    runs = workspace / "runs" / "lenet300_100"
    # CS (the real method) for the ablation that reads its ticket.
    run_cs_search(params, "lenet300_100", 0.0, 0, runs / "cs" / "search", CPU, checkpoint_dir=None)
    # L0: search, rewind retraining and random control.
    l0 = run_l0_search(params, "lenet300_100", 3e-3, 0, runs / "l0" / "search", CPU, checkpoint_dir=None)
    assert 0.0 < l0.metadata["remaining_weights"] < 1.0
    retrain_ticket(params, runs / "l0" / "search" / "ticket.pt", ("rewind", "random"), runs / "l0" / "retrain", CPU,
                      checkpoint_dir=None)
    random_ticket = load_ticket(runs / "l0" / "retrain" / "random" / "ticket.pt")
    for name, mask in l0.masks.items():
        assert int(random_ticket.masks[name].sum()) == int(mask.sum())
        assert torch.equal(random_ticket.rewind_state[name], l0.rewind_state[name])
    # GMP, magnitude pruning with rewinding / fine-tuning.
    run_gmp(params, "lenet300_100", 0.9, 0, runs / "gmp", CPU, checkpoint_dir=None)
    run_magnitude_dense(params, "lenet300_100", 0, runs / "magnitude" / "dense", CPU, checkpoint_dir=None)
    magnitude = run_magnitude(params, "lenet300_100", 0.9, 0, runs / "magnitude" / "dense", runs / "magnitude" / "s",
                                 CPU, checkpoint_dir=None)
    assert magnitude.metadata["remaining_count"] == round(0.1 * magnitude.metadata["prunable_count"])
    # The dense run is IMP's level 0: same seed, same rewind point.
    imp = run_imp(tiny_params({"imp": {"levels": 1}}, **small), "lenet300_100", 0,
                     workspace / "imp_check", CPU, checkpoint_dir=None)
    assert all(torch.equal(imp[0].rewind_state[k], magnitude.rewind_state[k]) for k in magnitude.rewind_state)
    # Ablations.
    for name in CS_ABLATIONS:
        run_cs_ablation(params, name, "lenet300_100", 0.0, 0, runs / name, CPU, checkpoint_dir=None)
    run_gmp_cs_layers(params, runs / "cs" / "search" / "ticket.pt", runs / "gmp_cs_layers", CPU, checkpoint_dir=None)
    cs_ticket = load_ticket(runs / "cs" / "search" / "ticket.pt")
    layerwise = load_ticket(runs / "gmp_cs_layers" / "layerwise" / "pruned.pt")
    for name, mask in cs_ticket.masks.items():  # GMP reaches CS's layer-wise counts exactly
        assert int(layerwise.masks[name].sum()) == max(1, int(mask.sum()))

    rows, _, _ = collect_rows(params, workspace / "runs")
    validated = as_rows(rows)
    found = {(r.method, r.variant, r.track) for r in validated}
    assert {
        ("l0", "pruned", "pruning"), ("l0", "rewind", "ticket"), ("l0", "random", "ticket"),
        ("gmp", "pruned", "pruning"), ("magnitude_finetune", "finetuned", "pruning"),
        ("magnitude_rewind", "rewind", "ticket"), ("magnitude_rewind", "random", "ticket"),
        ("cs_beta1", "pruned", "pruning"), ("cs_beta1", "rewind", "ticket"),
        ("cs_released_clamp", "pruned", "pruning"), ("cs_released_clamp", "rewind", "ticket"),
        ("gmp_cs_layers", "pruned", "pruning"),
    } <= found
    for row in validated:
        assert row.flops_nonzero <= row.flops_dense and row.network == "lenet300_100"
    l0_rows = [r for r in validated if r.method == "l0"]
    assert {r.setting for r in l0_rows} == {"penalty=0.003"}
    # Search cost: a ticket's rows (its retraining, its random control) carry the seconds of the run that
    # found it; a one-shot magnitude ticket's search is the dense training it pruned.
    def seconds(folder):
        return json.loads((folder / "timing.json").read_text())["seconds"]

    by_key = {(r["method"], r["variant"]): r["search_seconds"] for r in rows}
    l0_search = seconds(runs / "l0" / "search")
    assert l0_search > 0
    assert by_key[("l0", "pruned")] == by_key[("l0", "rewind")] == by_key[("l0", "random")] == l0_search
    dense_seconds = seconds(runs / "magnitude" / "dense")
    assert by_key[("magnitude_rewind", "rewind")] == by_key[("magnitude_rewind", "random")] == dense_seconds
    assert by_key[("cs_beta1", "rewind")] == by_key[("cs_beta1", "pruned")] == seconds(runs / "cs_beta1" / "search")


def test_disabled_random_control_is_left_out_of_the_one_retrain(workspace, tiny_params):
    params = tiny_params({"controls": {"random": False}})
    # the switch is read before the ticket: nothing is loaded, nothing runs
    assert retrain_ticket(params, workspace / "missing.pt", ("random",), workspace / "out", CPU, None) == []
    with pytest.raises(UserError, match="'mixup' is not allowed"):
        retrain_ticket(params, workspace / "missing.pt", ("rewind", "mixup"), workspace / "out", CPU, None)


def test_imp_controls_run_at_the_chosen_levels_random_masks_with_their_exact_counts(workspace, tiny_params):
    params = tiny_params({"imp": {"levels": 3}, "controls": {"imp_levels": [1, 3]}})
    runs = workspace / "runs" / "lenet300_100"
    tickets = run_imp(params, "lenet300_100", 0, runs / "imp" / "search", CPU, checkpoint_dir=None)
    tickets_dir, controls = runs / "imp" / "search" / "tickets", runs / "imp" / "controls"
    retrain_tickets(params, tickets_dir, "control-only,random", controls, CPU, checkpoint_dir=None)  # stage imp_controls
    assert {p.name: sorted(q.name for q in p.iterdir()) for p in controls.iterdir()} == {
        "level_01": ["random", "reinit"], "level_03": ["random", "reinit"]}
    for level in (1, 3):
        control = load_ticket(controls / f"level_{level:02d}" / "random" / "ticket.pt")
        for name, mask in tickets[level].masks.items():  # same per-layer counts, other positions
            assert int(control.masks[name].sum()) == int(mask.sum())
            assert torch.equal(control.rewind_state[name], tickets[level].rewind_state[name])
        assert any(not torch.equal(control.masks[n], m) for n, m in tickets[level].masks.items())
    rows, _, _ = collect_rows(params, workspace / "runs")
    random_rows = {r["setting"]: r for r in rows if r["method"] == "imp" and r["variant"] == "random"}
    assert sorted(random_rows) == ["level=1", "level=3"]
    assert random_rows["level=3"]["remaining_weights"] == pytest.approx(tickets[3].remaining_weights)
    assert 0.1 < random_rows["level=3"]["test_accuracy"] <= 1.0
    assert {r["setting"] for r in rows if r["method"] == "imp" and r["variant"] == "reinit"} == {"level=1", "level=3"}
    # 'controls' (IMP-C's stage): the rewind retraining at every level, the controls at the chosen ones
    retrain_tickets(params, tickets_dir, "controls", runs / "imp" / "all", CPU, checkpoint_dir=None)
    assert {p.name: sorted(q.name for q in p.iterdir()) for p in (runs / "imp" / "all").iterdir()} == {
        "level_01": ["reinit", "rewind"], "level_02": ["rewind"], "level_03": ["reinit", "rewind"]}
    # both controls switched off: the stage's outputs are markers
    off = tiny_params({"controls": {"reinit": False, "random": False}})
    retrain_tickets(off, tickets_dir, "control-only,random", workspace / "off", CPU, checkpoint_dir=None)
    assert [p.name for p in (workspace / "off").iterdir()] == ["skipped.json"]


def test_variants_combine_names_and_keywords(tiny_params):
    params = tiny_params({"controls": {"reinit": True, "released_scale": True}})
    assert chosen_variants(params, "control-only,random") == (["reinit", "rewind_released_scale", "random"],
                                                              {"reinit", "rewind_released_scale"})
    assert chosen_variants(params, "controls")[0] == ["rewind", "reinit", "rewind_released_scale"]
    assert chosen_variants(params, "rewind, reinit,rewind") == (["rewind", "reinit"], set())
    # the ticket definitions run next to the ticket, except the one the ticket itself is (cs.mask_scale)
    every = {"controls": {"reinit": False, "binary_mask": True, "released_scale": True, "folded_scale": True}}
    assert chosen_variants(tiny_params({**every, "cs": {"mask_scale": "folded"}}), "controls")[0] == [
        "rewind", "rewind_binary_mask", "rewind_released_scale"]
    assert chosen_variants(tiny_params(every), "controls")[0] == ["rewind", "rewind_released_scale", "rewind_folded_scale"]
    with pytest.raises(UserError, match="'mixup' is not allowed"):
        chosen_variants(params, "controls,mixup")


@pytest.mark.parametrize("levels, message", [([0], "pruned levels"), ([2, 2], "repeat"), ([9], "beyond imp.levels")])
def test_bad_imp_levels_of_the_controls_name_the_key(tiny_params, levels, message):
    with pytest.raises(UserError, match=f"controls.imp_levels.*{message}|{message}.*controls.imp_levels"):
        tiny_params({"controls": {"imp_levels": levels}})


def test_l0_search_is_deterministic_and_resumes(workspace, tiny_params, monkeypatch):
    params = tiny_params({"l0": {"gate_lr": 0.05}}, train_subset=1000, test_subset=500, val_size=200)
    _interrupted_then_resumed(monkeypatch, L0Search, lambda folder, checkpoints: run_l0_search(
        params, "lenet300_100", 3e-4, 0, workspace / folder, CPU, checkpoint_dir=workspace / checkpoints))
    _assert_same_run(workspace / "whole", workspace / "resumed")


# --- params and pipeline wiring -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_profiles_satisfy_the_baseline_checks(profile):
    params = params_from_dict(compose_profile(profile, conf_dir=REPO / "conf"))  # validates every section
    assert params.baselines.networks


def test_baseline_checks_name_the_key(tiny_params):
    with pytest.raises(UserError, match=r"ablations.s0 has \[0.5\], which sweep.s0 \(.*\) does not run; the ablations"):
        tiny_params({"ablations": {"s0": [0.5]}})
    with pytest.raises(UserError, match=r"l0.penalties: \[-1.0\] must all be >= 0"):
        tiny_params({"l0": {"penalties": [-1.0]}})
    # one list of seeds for every method: a params file from before says where the setting went
    with pytest.raises(UserError, match=r"^baselines.seeds has moved: set sweep.seeds \(every method runs on every seed\) instead$"):
        tiny_params({"baselines": {"seeds": [0]}})
    with pytest.raises(UserError, match="gmp.start"):
        tiny_params({"gmp": {"start": 0.5, "end": 0.4}})


def test_baseline_stages_declare_only_their_own_sections():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def declared(name):
        params = {p if isinstance(p, str) else next(iter(p)) for p in stages[name].get("params", [])}
        assert "cpu" in params, name  # every training stage pins its CPU threads
        return params - {"cpu"}

    net = "networks.${item.network}"
    assert declared("l0_search") == {"l0.droprate_init", "l0.rounds", "l0.gate_lr", net}
    assert declared("l0_retrain") == {"controls.random", net}
    assert declared("gmp") == {"gmp", net}
    assert declared("gmp_cs_layers") == {"gmp", net}
    assert declared("magnitude_dense") == {net}
    assert declared("magnitude") == {"magnitude", "controls.random", net}
    assert declared("slimming_train") == {"slimming.penalty", net}
    # not slimming.networks, the fan-out list: adding a network must not re-run the others' stages
    assert declared("slimming") == {"slimming.penalty", "slimming.finetune_epochs", net}
    assert declared("cs_beta1") == {"lambda", "cs", "ablations.beta1_threshold", net}
    assert declared("cs_released_clamp") == {"lambda", "cs", net}
    assert declared("cs_random_control") == {"controls.random", net}
    fan_out = ("baselines", "l0.penalties", "ablations.s0", "slimming.networks")
    for stage in stages.values():  # the fan-out lists reach no stage body (nor a whole section holding one)
        declared_here = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
        assert not any(p.startswith(fan_out) or p in ("l0", "ablations", "slimming") for p in declared_here)
