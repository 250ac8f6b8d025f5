"""Layer budgets (methods/budgets.py): uniform and ERK counts from shapes alone, then GMP and one-shot
magnitude pruning held to them on real data, with rows under their own method names."""

from __future__ import annotations

import math

import pytest
import torch

from cs_repro.errors import UserError
from cs_repro.evaluation import collect_rows
from cs_repro.methods.budgets import erk_densities, layer_kept_counts
from cs_repro.methods.gmp import run_gmp, run_gmp_budget
from cs_repro.methods.magnitude import run_magnitude, run_magnitude_dense
from cs_repro.report.aggregate import Aggregates
from cs_repro.report.rows import as_rows
from cs_repro.report.tables import fmt_group_acc, layer_budgets_table
from cs_repro.tickets import load_ticket

CPU = torch.device("cpu")
LENET300 = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


def test_erk_density_follows_sum_over_product_of_the_dimensions():
    densities = erk_densities(LENET300, 0.9)
    # the classifier's share would exceed 1 (it is small and its dims sum large): it stays dense, and the
    # other two share one scale times (sum of dims / product of dims)
    assert densities["fc3.weight"] == 1.0
    ratios = [densities[n] / (sum(s) / math.prod(s)) for n, s in LENET300.items() if n != "fc3.weight"]
    assert ratios[0] == pytest.approx(ratios[1])
    kept = sum(densities[n] * math.prod(s) for n, s in LENET300.items())
    assert kept == pytest.approx(0.1 * sum(math.prod(s) for s in LENET300.values()))
    assert 1.0 > densities["fc2.weight"] > densities["fc1.weight"]
    # at 99% no tensor overflows: all three share the scale
    half = erk_densities(LENET300, 0.99)
    ratios = [half[n] / (sum(s) / math.prod(s)) for n, s in LENET300.items()]
    assert max(ratios) == pytest.approx(min(ratios))


def test_erk_keeps_a_layer_dense_when_its_share_would_exceed_one_and_rescales_the_rest():
    shapes = {"wide": (1000, 1000), "small": (10, 10)}
    densities = erk_densities(shapes, 0.5)
    assert densities["small"] == 1.0
    assert densities["wide"] * 1_000_000 + 100 == pytest.approx(0.5 * 1_000_100)


@pytest.mark.parametrize("budget", ["uniform", "erk"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999])
def test_counts_add_up_to_the_overall_target_and_every_layer_keeps_one(budget, sparsity):
    counts = layer_kept_counts(budget, LENET300, sparsity)
    total = sum(math.prod(s) for s in LENET300.values())
    assert sum(counts.values()) == max(1, round((1 - sparsity) * total))
    assert all(1 <= counts[n] <= math.prod(s) for n, s in LENET300.items())
    if budget == "uniform":
        assert all(abs(counts[n] - (1 - sparsity) * math.prod(s)) <= 1 for n, s in LENET300.items())


def test_an_unknown_budget_is_one_clear_error():
    with pytest.raises(UserError, match="unknown layer budget 'snip'"):
        layer_kept_counts("snip", LENET300, 0.5)


def test_bad_layer_budgets_in_params_name_the_key(tiny_params):
    with pytest.raises(UserError, match="baselines.layer_budgets: 'random' is not a layer budget"):
        tiny_params({"baselines": {"layer_budgets": ["random"]}})


def test_gmp_and_magnitude_meet_the_erk_counts_exactly_on_real_data(workspace, tiny_params):
    params = tiny_params({"gmp": {"start": 0.0, "end": 1.0, "frequency": 4}}, epochs=2, lr_milestones=[1],
                         train_subset=1000, test_subset=500, val_size=200)
    expected = layer_kept_counts("erk", LENET300, 0.9)
    runs = workspace / "runs" / "lenet300_100"
    gmp = run_gmp_budget(params, "lenet300_100", "erk", 0.9, 0, runs / "gmp_erk", CPU, checkpoint_dir=None)
    assert {n: int(m.sum()) for n, m in gmp.masks.items()} == expected
    run_magnitude_dense(params, "lenet300_100", 0, runs / "magnitude" / "dense", CPU, checkpoint_dir=None)
    ticket = run_magnitude(params, "lenet300_100", 0.9, 0, runs / "magnitude" / "dense", runs / "magnitude" / "erk",
                           CPU, checkpoint_dir=None, budget="erk")
    assert {n: int(m.sum()) for n, m in ticket.masks.items()} == expected
    dense = torch.load(runs / "magnitude" / "dense" / "dense.pt", weights_only=False)["final_state"]
    for name, mask in ticket.masks.items():  # within each layer: the largest |w| stay
        weights = dense[name].abs()
        if not mask.all():  # fc3 stays dense under ERK at 90%
            assert weights[mask].min() >= weights[~mask].max()
    random = load_ticket(runs / "magnitude" / "erk" / "retrain" / "random" / "ticket.pt")
    assert {n: int(m.sum()) for n, m in random.masks.items()} == expected  # the random control keeps the budget
    rows = as_rows(collect_rows(params, workspace / "runs")[0])
    assert {(r.method, r.variant) for r in rows} >= {
        ("gmp_erk", "pruned"), ("magnitude_finetune_erk", "finetuned"), ("magnitude_rewind_erk", "rewind"),
        ("magnitude_rewind_erk", "random")}
    # the report puts the budgets side by side: global next to ERK at the same target (uniform did not run)
    agg = Aggregates(collect_rows(params, workspace / "runs")[0])
    assert layer_budgets_table(agg) is None  # nothing to set ERK beside until the global runs exist
    run_gmp(params, "lenet300_100", 0.9, 0, runs / "gmp", CPU, checkpoint_dir=None)
    run_magnitude(params, "lenet300_100", 0.9, 0, runs / "magnitude" / "dense", runs / "magnitude" / "global",
                  CPU, checkpoint_dir=None)
    agg = Aggregates(collect_rows(params, workspace / "runs")[0])
    table = layer_budgets_table(agg)
    by_method = {cells[1]: cells for cells in table.cells}
    assert set(by_method) == {"GMP", "Magnitude + fine-tune", "Magnitude + rewind"}
    for method, (name, variant, track) in {"GMP": ("gmp", "pruned", "pruning"),
                                           "Magnitude + fine-tune": ("magnitude_finetune", "finetuned", "pruning"),
                                           "Magnitude + rewind": ("magnitude_rewind", "rewind", "ticket")}.items():
        cells = by_method[method]
        assert cells[2:4] == ["sparsity=0.9", "10.00"] and cells[5] == "" and cells[7] == ""
        for column, method_name in ((4, name), (6, f"{name}_erk")):
            (group,) = agg.groups_for("lenet300_100", method_name, variant, track)
            assert cells[column] == fmt_group_acc(group)
