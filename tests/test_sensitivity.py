"""CS's hyperparameter sensitivity (methods/cs_sensitivity.py): settings parsed and validated, one value
acting on the search alone, and the report's figure, table and sentences from real runs."""

from __future__ import annotations

import json

import pytest
import torch

from cs_repro.errors import UserError
from cs_repro.evaluation import collect_rows
from cs_repro.methods.cs import run_cs_search
from cs_repro.methods.cs_sensitivity import parse_setting, run_cs_sensitivity
from cs_repro.report import figures, tables
from cs_repro.report.aggregate import Aggregates
from cs_repro.report.claims import limitations, sensitivity_sentences

CPU = torch.device("cpu")


def test_settings_parse_and_bad_ones_are_one_clear_line():
    assert parse_setting("beta_final=50") == ("beta_final", 50.0)
    assert parse_setting("lambda=1e-09") == ("lambda", 1e-9)
    for bad, needle in (("temperature=3", "is not 'name=value'"), ("lambda", "is not 'name=value'"),
                        ("lambda=small", "has no number"), ("beta_final=0.5", "out of range"),
                        ("weight_decay=-1", "out of range")):
        with pytest.raises(UserError, match=needle):
            parse_setting(bad)


def test_sensitivity_params_are_checked_against_the_main_sweep(tiny_params):
    with pytest.raises(UserError, match=r"sensitivity.s0 has \[0.5\], which sweep.s0 \(0.0\) does not run; the default point"):
        tiny_params({"sensitivity": {"networks": ["lenet300_100"], "s0": 0.5, "settings": ["lambda=1e-7"]}})
    # switched off (no networks), its s0 need not be the sweep's (a shrunk sweep stays valid)
    tiny_params({"sensitivity": {"networks": [], "s0": 0.5}})
    with pytest.raises(UserError, match=r"^sensitivity.seeds has moved: set sweep.seeds"):
        tiny_params({"sensitivity": {"networks": ["lenet300_100"], "seeds": [0]}})
    with pytest.raises(UserError, match="sensitivity.settings must not repeat"):
        tiny_params({"sensitivity": {"settings": ["lambda=1e-7", "lambda=1e-07"]}})
    with pytest.raises(UserError, match="sensitivity.settings: 'gamma=2'"):
        tiny_params({"sensitivity": {"settings": ["gamma=2"]}})


def _config(folder):
    return json.loads((folder / "metrics.json").read_text())["config"]


def test_a_value_changes_the_search_only_and_the_report_draws_the_sweep(workspace, tiny_params):
    params = tiny_params({"sensitivity": {"networks": ["lenet300_100"], "s0": 0.0}},
                         epochs=2, lr_milestones=[1], train_subset=1000, test_subset=500, val_size=200)
    runs = workspace / "runs" / "lenet300_100"
    run_cs_search(params, "lenet300_100", 0.0, 0, runs / "cs" / "search", CPU, checkpoint_dir=None)
    from cs_repro.methods.retrain import retrain_ticket

    retrain_ticket(params, runs / "cs" / "search" / "ticket.pt", ("rewind",), runs / "cs" / "retrain", CPU,
                   checkpoint_dir=None)
    for setting in ("weight_decay=0", "beta_final=50"):
        run_cs_sensitivity(params, "lenet300_100", setting, 0, runs / "sens" / setting, CPU, checkpoint_dir=None)
    search, retrain = runs / "sens" / "weight_decay=0" / "search", runs / "sens" / "weight_decay=0" / "retrain" / "rewind"
    assert _config(search)["network"]["weight_decay"] == 0.0
    assert _config(retrain)["network"]["weight_decay"] == params.network("lenet300_100").weight_decay
    assert _config(runs / "sens" / "beta_final=50" / "search")["cs"]["beta_final"] == 50.0

    agg = Aggregates(collect_rows(params, workspace / "runs")[0])
    sweep = agg.sensitivity("lenet300_100")
    assert sorted(sweep) == ["beta_final", "weight_decay"]
    assert [(p.value, p.is_default) for p in sweep["beta_final"]] == [(50.0, False), (200.0, True)]
    assert [(p.value, p.is_default) for p in sweep["weight_decay"]] == [(0.0, False), (1e-4, True)]
    default = sweep["beta_final"][1]  # the main CS run at s0 = 0
    assert default.ticket.setting == "s0=0" and default.ticket.method == "cs"
    assert all(p.ticket is not None and p.pruned is not None for points in sweep.values() for p in points)
    fig = figures.sensitivity(agg, workspace / "figures")
    assert fig is not None and (workspace / "figures" / "sensitivity.png").is_file()
    # each panel is labelled at the swept values (a log axis alone would label none of 50 and 200)
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert [t.get_text() for t in by_title["β_T (final temperature)"].get_xticklabels()] == ["50", "200"]
    assert [t.get_text() for t in by_title["weight decay (search)"].get_xticklabels()] == ["0", "1e-4"]
    assert len(by_title) == 2  # titles on the top row only; the bottom row names the value on its x axis
    table = tables.sensitivity_table(agg)
    assert len(table.cells) == 4 and any("(default)" in row[2] for row in table.cells)
    sentences = sensitivity_sentences(agg)
    cost = [s for s in sentences if "cost of tuning" in s]
    assert len(sentences) == 3 and cost and "2 values besides the defaults" in cost[0]
    assert "(8 epochs), so 16 epochs per seed" in cost[0]  # 3 rounds x 2 epochs + 2 retraining, twice
    assert "(means over 1 seed)" in sentences[0] and "(16 for the 1 seed here)" in cost[0]
    # the Limitations section knows the sweep ran (and says where), instead of calling it unmeasured
    limits = " ".join(limitations(agg, {"seeds": [0]}, []))
    assert "swept one at a time on LeNet-300-100 (section *CS's hyperparameter sensitivity*)" in limits
    assert "not measured" not in limits
