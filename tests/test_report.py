"""Report floor: rows -> aggregates -> figures, tables, REPORT.md (no training involved)."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection

from cs_repro.report import MATCHING_RULE, Aggregates, RowError, generate
from cs_repro.report import claims, figures, tables
from cs_repro.report.rows import load_results

E = 10  # epochs per training run in the fixture
SEEDS = (0, 1, 2)
NETWORKS = {"lenet300_100": "fashion_mnist", "resnet20": "cifar10"}
TITLES = {"lenet300_100": "LeNet-300-100 on Fashion-MNIST", "resnet20": "ResNet-20 on CIFAR-10"}
ACC_OFFSET = (-0.005, 0.0, 0.005)  # per seed: sample std 0.005
RW_FACTOR = (0.98, 1.0, 1.02)  # CS sparsity differs a little across seeds
LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")

# (setting, remaining weights, mean test accuracy, search seconds)
CS = [("s0=0.05", 0.5, 0.914, 390.0), ("s0=0", 0.2, 0.915, 360.0), ("s0=-0.05", 0.05, 0.905, 330.0),
      ("s0=-0.1", 0.02, 0.89, 300.0)]
IMP = [(f"level={lvl}", 0.8 ** lvl, acc, 100.0 * (lvl + 1))
       for lvl, acc in enumerate((0.912, 0.913, 0.91, 0.902, 0.895))]
IMP_C = [("level=1", 0.8, 0.90, 0.0), ("level=2", 0.64, 0.88, 0.0)]


def row(network, method, variant, seed, setting, rw, acc, *, track="ticket", search_epochs=0.0,
        search_seconds=0.0, retrain=E, layers=None):
    total = 1000
    return {
        "network": network, "dataset": NETWORKS.get(network, "cifar10"), "method": method,
        "variant": variant, "track": track, "seed": seed, "setting": setting,
        "remaining_weights": rw, "sparsity": 1.0 - rw, "test_accuracy": acc,
        "val_accuracy": acc, "search_epochs": float(search_epochs),
        "search_seconds": float(search_seconds), "retrain_epochs": retrain,
        "layer_remaining": layers if layers is not None else {
            name: min(1.0, rw * f) for name, f in zip(LAYERS, (0.8, 1.5, 3.0))},
        "params_total": total, "params_nonzero": round(total * rw),
        "flops_dense": 2 * total, "flops_nonzero": round(2 * total * rw),
    }


def fixture_rows() -> list[dict]:
    rows = []
    for net in NETWORKS:
        for i, seed in enumerate(SEEDS):
            off = ACC_OFFSET[i]
            rows.append(row(net, "dense", "rewind", seed, "dense", 1.0, 0.91 + 2 * off,
                            search_epochs=E))
            for setting, rw, acc, secs in CS:
                rows.append(row(net, "cs", "rewind", seed, setting, rw * RW_FACTOR[i], acc + off,
                                search_epochs=3 * E, search_seconds=secs))
                rows.append(row(net, "cs", "reinit", seed, setting, rw * RW_FACTOR[i],
                                acc - 0.05 + off, search_epochs=3 * E, search_seconds=secs))
            for lvl, (setting, rw, acc, secs) in enumerate(IMP):
                rows.append(row(net, "imp", "rewind", seed, setting, rw, acc + off,
                                search_epochs=(lvl + 1) * E, search_seconds=secs))
                rows.append(row(net, "imp", "reinit", seed, setting, rw, acc - 0.04 + off,
                                search_epochs=(lvl + 1) * E, search_seconds=secs))
            for lvl, (setting, rw, acc, _) in enumerate(IMP_C, start=1):
                rows.append(row(net, "imp_c", "rewind", seed, setting, rw, acc + off,
                                search_epochs=(lvl + 1) * E, search_seconds=50.0 * (lvl + 1)))
            for setting, rw, cs_acc, gmp_acc in (("s0=-0.05", 0.05, 0.90, 0.88),
                                                 ("s0=-0.1", 0.02, 0.87, 0.86)):
                rows.append(row(net, "cs", "pruned", seed, setting, rw, cs_acc + off,
                                track="pruning", search_epochs=3 * E))
                rows.append(row(net, "gmp", "pruned", seed, f"target={rw}", rw, gmp_acc + off,
                                track="pruning", search_epochs=E))
                rows.append(row(net, "gmp", "finetuned", seed, f"target={rw}", rw,
                                gmp_acc + 0.005 + off, track="pruning", search_epochs=E))
    return rows


META = {"profile": "smoke", "git_commit": "abc1234", "hardware": "1x test CPU",
        "seeds": list(SEEDS), "total_compute_seconds": 7200.0,
        "flops_convention": "one multiply-add = 2 FLOPs", "matching_rule": MATCHING_RULE}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return fixture_rows()


@pytest.fixture(scope="module")
def agg(rows) -> Aggregates:
    return Aggregates(rows)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("report")
    results = root / "results.json"
    results.write_text(json.dumps({"rows": rows, "meta": META}))
    out = root / "figures"
    paths = generate(results, out)
    return out, paths


def _stats(rows, **match):
    sel = [r for r in rows if all(r[k] == v for k, v in match.items())]
    acc = [r["test_accuracy"] for r in sel]
    rw = [r["remaining_weights"] for r in sel]
    return statistics.mean(acc), statistics.stdev(acc), statistics.mean(rw)


# ---- rows ------------------------------------------------------------------------------------
def test_missing_field_names_row_and_field(rows):
    bad = [dict(r) for r in rows[:3]]
    del bad[2]["search_epochs"]
    with pytest.raises(ValueError, match=r"row 2.*search_epochs"):
        Aggregates(bad)
    bad = [dict(rows[0], remaining_weights=0.0)]
    with pytest.raises(RowError, match="remaining_weights"):
        Aggregates(bad)


def test_load_results_round_trip(tmp_path, rows):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": rows[:5], "meta": {"profile": "p"}}))
    loaded, meta = load_results(path)
    assert len(loaded) == 5 and meta["profile"] == "p" and meta["hardware"] == "not recorded"


# ---- aggregation and matching ------------------------------------------------------------------
def test_groups_mean_and_sample_std(rows, agg):
    for net in NETWORKS:
        dense = agg.dense(net)
        mean, std, _ = _stats(rows, network=net, method="dense")
        assert dense.test_acc_mean == pytest.approx(mean) and dense.test_acc_std == pytest.approx(std)
        (g,) = [g for g in agg.groups_for(net, "cs") if g.setting == "s0=-0.05"]
        mean, std, rw = _stats(rows, network=net, method="cs", variant="rewind", setting="s0=-0.05")
        assert (g.test_acc_mean, g.test_acc_std, g.remaining_mean) == pytest.approx((mean, std, rw))
        assert g.n_seeds == 3


def test_best_and_sparsest_matching(agg):
    assert agg.best_ticket("resnet20", "cs").setting == "s0=0"
    assert agg.best_ticket("resnet20", "imp").setting == "level=1"
    assert agg.sparsest_matching("resnet20", "cs").setting == "s0=-0.05"
    assert agg.sparsest_matching("resnet20", "imp").setting == "level=3"
    assert agg.sparsest_matching("resnet20", "imp_c").setting == "level=1"


def test_no_match_tie_and_single_seed():
    rows = [row("vgg16", "dense", "rewind", s, "dense", 1.0, a) for s, a in ((0, 0.93), (1, 0.95))]
    rows += [row("vgg16", "cs", "rewind", 0, "s0=0", 0.1, 0.90)]  # below 0.94 - 0.0141
    agg = Aggregates(rows)
    assert agg.sparsest_matching("vgg16", "cs") is None
    (g,) = agg.groups_for("vgg16", "cs")
    assert g.n_seeds == 1 and g.test_acc_std == 0.0
    table = tables.ticket_search_table(agg)
    (cs_cells,) = [c for c in table.cells if c[1] == "CS"]
    # a single seed reads "n = 1", never "± 0.00"; the best ticket names its setting
    assert cs_cells[2:5] == ["90.00 (n = 1)", "10.00", "s0=0"]
    assert cs_cells[5:] == [tables.NONE_MATCH] * 6
    (dense_cells,) = [c for c in table.cells if c[1] == "Dense"]
    assert dense_cells[2] == "94.00 ± 1.41 (n = 2)"
    assert "± 0.00" not in tables.to_markdown(table)
    # ties in remaining weights: the more accurate wins
    rows += [row("vgg16", "cs", "rewind", 0, "s0=-0.01", 0.05, 0.94),
             row("vgg16", "cs", "rewind", 0, "s0=-0.02", 0.05, 0.95),
             row("vgg16", "cs", "rewind", 0, "s0=-0.03", 0.20, 0.96)]
    assert Aggregates(rows).sparsest_matching("vgg16", "cs").setting == "s0=-0.02"
    # a single dense seed: std 0, so matching needs the dense accuracy itself
    single = [row("vgg16", "dense", "rewind", 0, "dense", 1.0, 0.93),
              row("vgg16", "cs", "rewind", 0, "a", 0.1, 0.93),
              row("vgg16", "cs", "rewind", 0, "b", 0.05, 0.9299)]
    assert Aggregates(single).dense("vgg16").test_acc_std == 0.0
    assert Aggregates(single).sparsest_matching("vgg16", "cs").setting == "a"


def test_search_cost_curves_match_hand_computation(agg):
    seq = agg.search_curve("lenet300_100", "cs", "sequential")
    # natural order of s0: -0.1, -0.05, 0, 0.05; each run = 3 rounds x 10 + 10 retraining
    assert [p.setting for p in seq.points] == ["s0=-0.1", "s0=-0.05", "s0=0", "s0=0.05"]
    assert [p.cost for p in seq.points] == pytest.approx([40, 80, 120, 160])
    assert [p.best_accuracy for p in seq.points] == pytest.approx([0.89, 0.905, 0.915, 0.915])
    par = agg.search_curve("lenet300_100", "cs", "parallel")
    assert par.final_cost == pytest.approx(40) and par.points[-1].best_accuracy == pytest.approx(0.915)
    # seconds: retraining estimated at the search's seconds/epoch, i.e. x 4/3
    par_s = agg.search_curve("lenet300_100", "cs", "parallel", "seconds")
    assert [p.cost for p in par_s.points] == pytest.approx([400, 440, 480, 520])
    seq_s = agg.search_curve("lenet300_100", "cs", "sequential", "seconds")
    assert seq_s.final_cost == pytest.approx(400 + 440 + 480 + 520)
    imp = agg.search_curve("lenet300_100", "imp", "sequential")
    assert [p.cost for p in imp.points] == pytest.approx([10, 20, 30, 40, 50])  # not double counted
    assert [p.best_accuracy for p in imp.points] == pytest.approx([0.912, 0.913, 0.913, 0.913, 0.913])
    assert agg.search_curve("lenet300_100", "imp", "parallel") is None
    imp_c = agg.search_curve("lenet300_100", "imp_c", "sequential")
    assert [p.cost for p in imp_c.points] == pytest.approx([20 + 10, 30 + 20])
    assert agg.cost_to_reach(agg.sparsest_matching("resnet20", "imp")) == 40
    assert agg.cost_to_reach(agg.sparsest_matching("resnet20", "cs")) == 40


# ---- outputs ---------------------------------------------------------------------------------
def test_figures_and_tables_are_byte_identical_when_regenerated(generated, tmp_path, monkeypatch):
    """They are committed to git: a second run on the same results must not change a byte (no timestamps;
    matplotlib stamps a PDF with the time, or with SOURCE_DATE_EPOCH, unless told not to)."""
    out, _ = generated
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    again = tmp_path / "again"
    generate(out.parent / "results.json", again)
    for path in sorted(out.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (again / path.relative_to(out)).read_bytes(), path.name


def test_files_written(generated):
    out, paths = generated
    for name in ("ticket_search", "pruning", "search_cost", "layer_sparsity"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    for name in ("ticket_search", "inference_cost", "controls"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert paths["report"] == [out / "REPORT.md"]


def _legend_labels(fig):
    assert len(fig.legends) == 1
    assert all(ax.get_legend() is None for ax in fig.axes)
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_headline_figure(agg):
    fig = figures.ticket_search(agg)
    assert [ax.get_title() for ax in fig.axes] == [TITLES[n] for n in NETWORKS]
    labels = _legend_labels(fig)
    assert {"CS", "IMP", figures.DENSE_LABEL} <= set(labels)
    assert not any("IMP-C" in lab or "reinit" in lab for lab in labels)
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.xaxis_inverted()
        assert ax.get_xlabel() == "Remaining weights (%)" and ax.get_ylabel() == "Test accuracy (%)"
        assert ax.xaxis.label.get_fontsize() >= 14 and ax.yaxis.label.get_fontsize() >= 14
        assert all(t.label1.get_fontsize() >= 12 for t in ax.yaxis.get_major_ticks())
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) >= 2  # CS and IMP bands
        assert all(line.get_linewidth() >= 2.5 for line in ax.get_lines())
        assert not any(c.__class__.__name__ == "ErrorbarContainer" for c in ax.containers)
    full = figures.ticket_search(agg, show_optional=True)
    labels = _legend_labels(full)
    assert {"IMP-C", "CS (reinit)", "IMP (reinit)"} <= set(labels)


def test_other_figures(agg):
    fig = figures.search_cost(agg)
    assert len(fig.axes) == 4 and len(fig.legends) == 1
    labels = _legend_labels(fig)
    assert any("CS, sequential" in lab for lab in labels)
    assert any("parallel" in lab for lab in labels) and "IMP" in labels
    # the two rows have their own titles
    assert [ax.get_title() for ax in fig.axes] == [f"{TITLES[n]}\n(cost in epochs)" for n in NETWORKS] + [
        f"{TITLES[n]}\n(cost in wall-clock seconds)" for n in NETWORKS]
    assert figures.pruning(agg).axes[0].get_title() == TITLES["lenet300_100"]
    assert figures.pruning(Aggregates([r for r in fixture_rows() if r["track"] == "ticket"])) is None
    # layers are compared at matched sparsity: CS's sparsest ticket with an IMP ticket within 5% is
    # s0=0.05 (50%) next to level=3 (51.2%); not CS's sparsest matching ticket (5%, IMP's nearest 41%)
    chosen, matched = figures.layer_pair(agg, "resnet20")
    assert [(m, g.setting) for m, g in chosen] == [("cs", "s0=0.05"), ("imp", "level=3")] and matched
    fig = figures.layer_sparsity(agg)
    assert len(fig.legends) == 1 and len(fig.axes[0].patches) == 2 * len(LAYERS)
    assert "(CS [s0=0.05] 50% vs IMP [level=3] 51.2% overall)" in fig.axes[0].get_title()
    # no pair within 5%: the closest one, and the title says it is not matched
    far = [r for r in fixture_rows() if not (r["method"] == "cs" and r["setting"] == "s0=0.05")]
    chosen, matched = figures.layer_pair(Aggregates(far), "resnet20")
    assert [g.setting for _, g in chosen] == ["s0=0", "level=4"] and not matched
    assert "NOT matched" in figures.layer_sparsity(Aggregates(far)).axes[1].get_title()


def _inside(fig, box) -> bool:
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def _legend_inside(fig) -> bool:
    """The legend and every panel title lie inside the canvas that is saved."""
    fig.canvas.draw()
    return _inside(fig, fig.legends[0].get_window_extent()) and all(
        _inside(fig, ax.title.get_window_extent()) for ax in fig.axes)


def test_every_legend_fits_inside_its_figure(rows, tmp_path):
    """The shared legend is never cut off, however many and however long its entries are."""
    extra = []
    for method in ("cs_beta1", "cs_released_clamp", "gmp_cs_layers", "l0", "magnitude_finetune"):
        extra += [dict(r, method=method) for r in rows if r["method"] == "gmp"]
    many = Aggregates(rows + extra)
    drawn = [figures.ticket_search(many, show_optional=True), figures.pruning(many, show_optional=True),
             figures.search_cost(many, show_optional=True), figures.layer_sparsity(many)]
    for fig in drawn:
        assert _legend_inside(fig), fig.legends[0].get_texts()[0].get_text()
    # one panel with many long entries: fewer columns, still inside
    one = Aggregates([r for r in rows + extra if r["network"] == "resnet20"])
    fig = figures.search_cost(one, show_optional=True)
    assert _legend_inside(fig) and fig.legends[0]._ncols < figures.LEGEND_MAX_COLUMNS
    fig.savefig(tmp_path / "one.png")  # the saved canvas is the one measured


def test_pruning_figure_gives_every_method_its_colour_and_keeps_ablations_optional(rows):
    extra = [dict(r, method=m, test_accuracy=r["test_accuracy"] - 0.3 if m == "cs_beta1" else r["test_accuracy"])
             for m in ("cs_beta1", "cs_released_clamp", "l0") for r in rows if r["method"] == "gmp"]
    many = Aggregates(rows + extra)
    default = _legend_labels(figures.pruning(many))
    assert not any("beta" in label or "clamp" in label for label in default)
    full = figures.pruning(many, show_optional=True)
    colours = {}
    for line in full.axes[0].get_lines():
        method = line.get_label().split(" (")[0]
        if not line.get_label().startswith("Dense"):
            colours.setdefault(method, set()).add(line.get_color())
    assert len(colours) == 5 and all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == 5  # no two methods share a colour
    # a network where only CS ran says so instead of looking like a hidden baseline
    only_cs = Aggregates([r for r in rows if r["track"] == "ticket" or r["method"] == "cs"])
    notes = [t.get_text() for t in figures.pruning(only_cs).axes[0].texts]
    assert notes == ["only CS ran on this network"]


def _read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_ticket_table_equals_independent_aggregates(generated, rows):
    out, _ = generated
    table = _read_csv(out / "tables" / "ticket_search.csv")
    md = (out / "tables" / "ticket_search.md").read_text()
    tex = (out / "tables" / "ticket_search.tex").read_text()
    assert MATCHING_RULE in md
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex
    for net in NETWORKS:
        by_method = {r["method"]: r for r in table if r["network"] == net}
        assert set(by_method) == {"dense", "cs", "imp", "imp_c"}
        mean, std, _ = _stats(rows, network=net, method="dense")
        assert float(by_method["dense"]["best_test_acc_mean_pct"]) == pytest.approx(100 * mean)
        assert float(by_method["dense"]["best_test_acc_std_pct"]) == pytest.approx(100 * std)
        assert f"{100 * mean:.2f} ± {100 * std:.2f}" in md
        for method, setting in (("cs", "s0=-0.05"), ("imp", "level=3")):
            mean, std, rw = _stats(rows, network=net, method=method, variant="rewind",
                                   setting=setting)
            r = by_method[method]
            assert r["sparsest_matching_setting"] == setting
            assert float(r["sparsest_matching_remaining_pct"]) == pytest.approx(100 * rw)
            assert float(r["sparsest_matching_sparsity_pct"]) == pytest.approx(100 * (1 - rw))
            assert float(r["sparsest_matching_test_acc_mean_pct"]) == pytest.approx(100 * mean)
            assert float(r["sparsest_matching_test_acc_std_pct"]) == pytest.approx(100 * std)
            assert f"{100 * mean:.2f} ± {100 * std:.2f}" in md
        assert float(by_method["cs"]["search_epochs"]) == 30
        assert float(by_method["cs"]["cost_epochs_incl_retraining"]) == 40
        assert float(by_method["imp"]["search_epochs"]) == 40
        assert float(by_method["imp"]["cost_epochs_incl_retraining"]) == 40
        mean, std, _ = _stats(rows, network=net, method="cs", variant="rewind", setting="s0=0")
        assert float(by_method["cs"]["best_test_acc_mean_pct"]) == pytest.approx(100 * mean)


def test_inference_table(generated, rows):
    out, _ = generated
    table = _read_csv(out / "tables" / "inference_cost.csv")
    md = (out / "tables" / "inference_cost.md").read_text()
    assert META["flops_convention"] in md
    cs = [r for r in table if r["network"] == "resnet20" and r["model"] == "cs"][0]
    sel = [r for r in rows if r["network"] == "resnet20" and r["method"] == "cs"
           and r["variant"] == "rewind" and r["setting"] == "s0=-0.05"]
    assert float(cs["params_nonzero"]) == pytest.approx(statistics.mean(r["params_nonzero"] for r in sel))
    assert float(cs["flops_nonzero"]) == pytest.approx(statistics.mean(r["flops_nonzero"] for r in sel))
    dense = [r for r in table if r["network"] == "resnet20" and r["model"] == "dense"][0]
    assert float(dense["params_nonzero"]) == 1000 and float(dense["flops_nonzero"]) == 2000


def test_report(generated):
    out, _ = generated
    text = (out / "REPORT.md").read_text()
    for name in ("ticket_search", "pruning", "search_cost", "layer_sparsity"):
        assert f"({name}.png)" in text
    for needle in ("smoke", "abc1234", "1x test CPU", "7,200 s", "0, 1, 2", MATCHING_RULE,
                   "| Method |", "| Model |", "Reinit control (%)"):
        assert needle in text
    section = text.split("## Claims", 1)[1].split("\n## ", 1)[0]
    assert claims.PAPER_CLAIMS[0] in section
    verdicts = [line for line in section.splitlines() if line.strip().startswith("**") and ":" in line
                and not line.startswith("**Scope")]
    assert len(verdicts) == 3
    words = (claims.SUPPORTED, claims.NOT_SUPPORTED, claims.CANNOT_JUDGE, claims.COVERAGE_VERDICT)
    assert all(any(f"**{w}**" in v for w in words) for v in verdicts)
    # the scope comes before the claims, and the Limitations section closes the judgement
    assert section.lstrip().startswith("**Scope.** These verdicts come from the smoke profile: LeNet-300-100 on "
                                       "Fashion-MNIST, 10 training epochs per run")
    limits = text.split("## Limitations", 1)[1]
    assert "**CS cannot hit an exact sparsity.**" in limits and "s0=-0.1" in limits
    assert "**CS's hyperparameters must be searched" in limits and "4 s0 values, 160 epochs per seed" in limits
    assert "so their sensitivity is not measured by this run (the `extended` profile sweeps them)" in limits


def test_claim_verdicts_follow_the_numbers(agg, rows):
    # claim 1: CS sparsest matching 5% < IMP 51.2%; IMP never goes below 40.96%, the sparsest level both
    # reach, where CS would be read between 50% and 20%: a 2.5x gap, so that part cannot be judged...
    verdict, sentence = claims.judge_claim1(agg)
    assert verdict == claims.COVERAGE_VERDICT and "51.20%" in sentence
    assert "CS's tickets jump from 50.00% [s0=0.05] to 20.00% [s0=0] (2.5x); add s0 ≈ 0.03" in sentence
    # ... until a CS ticket at 30% fills the gap: CS (interpolated between 50% and 30%) beats IMP's 89.5%
    filled = [dict(r, setting="s0=0.03", remaining_weights=0.3 * r["remaining_weights"] / 0.5,
                   sparsity=1 - 0.3 * r["remaining_weights"] / 0.5)
              for r in rows if r["method"] == "cs" and r["setting"] == "s0=0.05"]
    verdict, sentence = claims.judge_claim1(Aggregates(rows + filled))
    assert verdict == claims.SUPPORTED and "coverage" not in sentence
    # claim 2: one CS run 40 epochs vs IMP level 3 = 40 epochs: not cheaper
    verdict, sentence = claims.judge_claim2(agg)
    assert verdict == claims.NOT_SUPPORTED and "40 epochs" in sentence
    # claim 3: CS pruned beats GMP (best of pruned / fine-tuned) at 2% remaining
    assert claims.judge_claim3(agg)[0] == claims.SUPPORTED
    only_ticket = Aggregates([r for r in rows if r["track"] == "ticket"])
    verdict, sentence = claims.judge_claim3(only_ticket)
    assert verdict == claims.CANNOT_JUDGE and "not run in this profile" in sentence
    # the data going the other way: IMP more accurate than CS everywhere
    flipped = [dict(r, test_accuracy=r["test_accuracy"] - 0.05) if r["method"] == "cs" else r
               for r in rows]
    assert claims.judge_claim1(Aggregates(flipped))[0] == claims.NOT_SUPPORTED


def test_report_states_the_claims_that_docs_method_lists(generated):
    """The claims come from the package, and docs/method.md lists the same three sentences."""
    out, _ = generated
    report = (out / "REPORT.md").read_text()
    for number, claim in enumerate(claims.PAPER_CLAIMS, start=1):
        assert f"{number}. *{claim}*" in report
    method_md = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text()
    section = method_md.split("## The paper's claims", 1)[1].split("\n## ", 1)[0]
    # a numbered item runs until the next item or a blank line
    listed = [" ".join(item.split()) for item in re.findall(r"^\d\. (.*?)(?=^\d\. |\n\s*\n|\Z)", section, re.M | re.S)]
    assert listed == list(claims.PAPER_CLAIMS)


def test_controls_table_puts_each_ticket_next_to_its_controls(rows, tmp_path):
    random_rows = [dict(r, variant="random", test_accuracy=r["test_accuracy"] - 0.07) for r in rows
                   if r["method"] == "imp" and r["variant"] == "rewind" and r["setting"] == "level=3"]
    agg = Aggregates(rows + random_rows)
    table = tables.controls_table(agg)
    assert table is not None and table.name == "controls"
    imp3 = [c for c in table.cells if c[0].startswith("ResNet-20") and c[1] == "IMP" and c[2] == "level=3"]
    assert len(imp3) == 1
    mean, std, rw = _stats(rows, network="resnet20", method="imp", variant="rewind", setting="level=3")
    reinit_mean, reinit_std, _ = _stats(rows, network="resnet20", method="imp", variant="reinit", setting="level=3")
    assert imp3[0][3:] == [tables.fmt_remaining(rw), f"{tables.fmt_acc(mean, std)} (n = 3)",
                           f"{tables.fmt_acc(reinit_mean, reinit_std)} (n = 3)",
                           f"{tables.fmt_acc(mean - 0.07, std)} (n = 3)", "", "", ""]
    imp2 = next(c for c in table.cells if c[0].startswith("ResNet-20") and c[1] == "IMP" and c[2] == "level=2")
    assert imp2[table.headers.index("Random-mask control (%)")] == ""  # no random control at that level
    csv_row = next(r for r in table.csv_rows if r[0] == "resnet20" and r[2] == "imp" and r[3] == "level=3")
    header = table.csv_header
    assert float(csv_row[header.index("random_test_acc_mean_pct")]) == pytest.approx(100 * (mean - 0.07))
    assert csv_row[header.index("random_n_seeds")] == 3 and csv_row[-1] == ""
    written = tables.write_table(table, tmp_path)
    assert {p.suffix for p in written} == {".md", ".csv", ".tex"}
    # no controls at all: no table
    assert tables.controls_table(Aggregates([r for r in rows if r["variant"] != "reinit"])) is None


def test_cs_vs_l0_paragraph_follows_the_numbers(rows):
    no_l0 = claims.cs_vs_l0(Aggregates(rows))
    assert no_l0.startswith("CS vs. L0: not compared")
    # L0 tickets 3 points worse than CS at the same sparsities, on every network: CS wins both ways.
    l0_rows = [dict(r, method="l0", test_accuracy=r["test_accuracy"] - 0.03) for r in rows
               if r["method"] == "cs" and r["variant"] == "rewind" and r["track"] == "ticket"]
    text = claims.cs_vs_l0(Aggregates(rows + l0_rows))
    assert text.startswith("CS vs. L0: CS finds sparser matching tickets and is more accurate")
    better_l0 = [dict(r, test_accuracy=r["test_accuracy"] + 0.06) for r in l0_rows]
    assert claims.cs_vs_l0(Aggregates(rows + better_l0)).startswith("CS vs. L0: CS does not beat L0 here")


def test_provenance_commit_ignores_what_a_run_rewrites(tmp_path, monkeypatch):
    """dvc.lock, .gitignore files, the committed metrics and figures and the README's results block change
    during every `make repro`; code or params changes must show."""
    import subprocess

    from cs_repro.evaluation import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("dvc.lock", ".gitignore", "params.yaml", "README.md", "metrics/summary.json", "figures/REPORT.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("a\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    monkeypatch.chdir(tmp_path)
    clean = git_commit()
    assert len(clean) >= 7 and "+" not in clean
    for name in ("dvc.lock", ".gitignore", "sub/.gitignore", "README.md", "metrics/summary.json", "figures/REPORT.md"):
        (tmp_path / name).write_text("b\n")
    assert git_commit() == clean
    (tmp_path / "params.yaml").write_text("b\n")
    assert git_commit() == clean + "+changes"


def _epochs(*points):
    return {"epochs": [{"phase": 0, "phase_name": "round 1/3", "epoch": i, "val_accuracy": acc, "train_loss": loss}
                       for i, (acc, loss) in enumerate(points)]}


def test_collapse_is_found_where_accuracy_falls_back_to_chance():
    from cs_repro.evaluation import collapse_of

    died = _epochs((0.70, 1.5), (0.78, 0.6), (0.10, 39.9), (0.10, 2.303))
    assert collapse_of(died, 10) == ("validation accuracy fell to 10.0% (chance: 10%) in round 1/3, epoch 3, "
                                     "after 78.0%; training loss that epoch 39.9")
    assert collapse_of(_epochs((0.70, 1.5), (0.80, 0.6), (0.81, 0.5)), 10) is None  # healthy
    assert collapse_of(_epochs((0.11, 2.3), (0.10, 2.3)), 10) is None  # never learned: nothing to collapse from
    assert collapse_of(_epochs((0.70, 1.5), (0.25, 1.9)), 10) is None  # worse, not dead
    assert collapse_of(_epochs((0.70, 1.5), (0.70, float("nan"))), 10) == "training loss became nan in round 1/3, epoch 2"


def test_report_lists_collapsed_runs(tmp_path, rows):
    from cs_repro.report.markdown import write_report

    runs = ["lenet5 cs s0=0.02 seed=1: validation accuracy fell to 10.0% (chance: 10%) in round 1/3, epoch 4"]
    text = write_report(rows, {**META, "collapsed_runs": runs}, tmp_path).read_text()
    assert "## Runs that collapsed" in text and f"- {runs[0]}" in text
    assert "## Runs that collapsed" not in write_report(rows, META, tmp_path / "b").read_text()


def _log_interp(x, x0, y0, x1, y1):
    import math
    t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return y0 + t * (y1 - y0)


def test_interpolated_accuracies_say_so_and_name_their_measured_neighbours(agg, rows):
    # IMP's sparsest ticket keeps 0.8^4 = 40.96%; CS has no ticket there (its tickets keep 50% and 20%)
    _, sentence = claims.judge_claim1(agg)
    cs50 = _stats(rows, network="resnet20", method="cs", variant="rewind", setting="s0=0.05")
    cs20 = _stats(rows, network="resnet20", method="cs", variant="rewind", setting="s0=0")
    imp4 = _stats(rows, network="resnet20", method="imp", variant="rewind", setting="level=4")
    expected = _log_interp(imp4[2], cs20[2], cs20[0], cs50[2], cs50[0])
    assert (f"CS reaches about {100 * expected:.2f}% (interpolated, nothing measured there: between "
            f"{100 * cs20[0]:.2f}% at {100 * cs20[2]:.2f}% and {100 * cs50[0]:.2f}% at {100 * cs50[2]:.2f}%) "
            f"vs {100 * imp4[0]:.2f}% (measured) for IMP") in sentence
    # a ticket within 5% of the level is read as measured, not interpolated
    reading = claims.read_accuracy([(0.2, 0.9), (0.5, 0.8)], 0.205)
    assert not reading.interpolated and reading.measured_at == 0.2 and reading.accuracy == 0.9
    assert claims.reading_text(reading) == "90.00% (measured at 20.00%)"
    # every reported ticket names its setting and seed count
    assert "5.00% remaining [s0=-0.05; n = 3;" in sentence and "[level=3; n = 3;" in sentence


def _net(method, settings, seeds=(0, 1), acc_spread=0.0):
    """Rows of one method on vgg16: settings = [(setting, remaining, accuracy, search epochs)]."""
    return [row("vgg16", method, "rewind", seed, setting, rw, acc + (acc_spread if seed else -acc_spread),
                search_epochs=epochs, retrain=5)
            for setting, rw, acc, epochs in settings for seed in seeds]


def test_one_rule_for_missing_data_and_search_cost_at_matched_sparsity():
    dense = _net("dense", [("dense", 1.0, 0.90, 5)], acc_spread=0.005)  # threshold 0.90 - 0.00707
    imp = _net("imp", [(f"level={lvl}", 0.8 ** lvl, acc, 5 * (lvl + 1))
                       for lvl, acc in ((1, 0.90), (2, 0.90), (10, 0.897), (11, 0.80))])
    # CS's sparsest matching ticket keeps 11.0%; IMP's level 10 (10.74%) is within 5% of it: cost 55
    # epochs, not level 11's, and CS's one run costs 15 + 5 retraining
    cs = _net("cs", [("s0=0", 0.11, 0.899, 15), ("s0=-0.1", 0.01, 0.70, 15)])
    verdict, sentence = claims.judge_claim2(Aggregates(dense + imp + cs))
    assert verdict == claims.SUPPORTED
    assert "at 11.00% remaining or sparser" in sentence and "costs 20 epochs as one s0 run" in sentence
    assert "vs 55 epochs for IMP's (10.74% remaining [level=10;" in sentence
    assert "the whole CS sweep of 2 runs costs 40 epochs" in sentence
    # CS without a matching ticket loses claim 1 AND claim 2 (one rule), IMP without one loses both too
    bad_cs = _net("cs", [("s0=0", 0.11, 0.80, 15)])
    for judge in (claims.judge_claim1, claims.judge_claim2):
        verdict, sentence = judge(Aggregates(dense + imp + bad_cs))
        assert verdict == claims.NOT_SUPPORTED, sentence
    assert "CS found no matching ticket in 20 epochs" in claims.judge_claim2(Aggregates(dense + imp + bad_cs))[1]
    bad_imp = _net("imp", [("level=1", 0.8, 0.80, 10)])
    assert claims.judge_claim2(Aggregates(dense + bad_imp + cs))[0] == claims.SUPPORTED
    # nothing to compare: unknown for both
    assert claims.judge_claim2(Aggregates(dense + _net("imp", [("level=1", 0.8, 0.8, 10)]) + bad_cs))[0] \
        == claims.CANNOT_JUDGE


def test_cs_vs_l0_draws_no_conclusion_from_a_single_seed(rows):
    l0_rows = [dict(r, method="l0", test_accuracy=r["test_accuracy"] - 0.03) for r in rows
               if r["method"] == "cs" and r["variant"] == "rewind" and r["track"] == "ticket" and r["seed"] == 0]
    text = claims.cs_vs_l0(Aggregates(rows + l0_rows))
    assert text.startswith("CS vs. L0: too few seeds to draw a conclusion (LeNet-300-100: CS n = 3, L0 n = 1")
    # the margin of each ticket over the matching threshold is stated: CS's 90.5% vs 91% - 1 point
    assert "5.00% remaining [s0=-0.05; n = 3; 0.50 points above the matching threshold] while L0" in text


def test_pruning_table_puts_every_method_next_to_cs_at_the_same_sparsity(generated, rows):
    out, _ = generated
    md = (out / "tables" / "pruning.md").read_text()
    table = _read_csv(out / "tables" / "pruning.csv")
    gmp = [r for r in table if r["network"] == "resnet20" and r["method"] == "gmp"]
    assert {r["setting"] for r in gmp} == {"target=0.05", "target=0.02"}
    for r in gmp:
        rw = float(r["remaining_pct"]) / 100
        pruned = _stats(rows, network="resnet20", method="gmp", variant="pruned", setting=f"target={rw}")
        tuned = _stats(rows, network="resnet20", method="gmp", variant="finetuned", setting=f"target={rw}")
        cs = _stats(rows, network="resnet20", method="cs", variant="pruned", track="pruning",
                    setting="s0=-0.05" if rw == 0.05 else "s0=-0.1")
        assert float(r["pruned_test_acc_mean_pct"]) == pytest.approx(100 * pruned[0])
        assert float(r["finetuned_test_acc_mean_pct"]) == pytest.approx(100 * tuned[0])
        # CS has a network at exactly these sparsities: measured, not interpolated
        assert float(r["cs_same_remaining_test_acc_pct"]) == pytest.approx(100 * cs[0])
        assert r["cs_same_remaining_interpolated"] == "0"
    assert "| GMP | target=0.05 | 5.00 | 88.00 ± 0.50 (n = 3) | 88.50 ± 0.50 (n = 3) | 90.00 |" in md
    # between two CS networks the value is interpolated and marked
    mid = [dict(r, method="l0", setting="penalty=1", remaining_weights=0.03, sparsity=0.97) for r in rows
           if r["network"] == "resnet20" and r["method"] == "gmp" and r["variant"] == "pruned"
           and r["setting"] == "target=0.05"]
    table = tables.pruning_table(Aggregates(rows + mid))
    (cell,) = [c for c in table.cells if c[0].startswith("ResNet-20") and c[1] == "L0 (hard concrete)"]
    expected = _log_interp(0.03, 0.02, 0.87, 0.05, 0.90)
    assert cell[-1] == f"≈{100 * expected:.2f} (interpolated)"


def test_each_ablation_gets_one_sentence_saying_what_it_shows(rows):
    beta1 = [dict(r, method="cs_beta1", remaining_weights=0.5, sparsity=0.5, test_accuracy=0.85) for r in rows
             if r["method"] == "cs" and r["variant"] == "rewind" and r["setting"] == "s0=0" and r["seed"] == 0]
    sentences = claims.ablation_sentences(Aggregates(rows + beta1))
    assert len(sentences) == 2  # one per network
    first = sentences[0]
    assert first.startswith("**CS, beta = 1 + threshold** on LeNet-300-100 tests whether annealing the temperature")
    assert "annealing matters: without it CS's tickets are worse" in first and first.endswith("One seed: indicative only.")
    assert claims.ablation_sentences(Aggregates(rows)) == []


def test_readme_results_block_is_the_committed_metrics():
    """README's numbers come from the committed metrics/results.json; `make readme` refreshes them."""
    from cs_repro.report.markdown import README_BEGIN, README_END, replace_results_block, results_block

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    rows, meta = load_results(repo / "metrics" / "results.json")
    block = results_block(rows, meta)
    assert readme[readme.index(README_BEGIN):readme.index(README_END) + len(README_END)] == block, \
        "README's results block is stale: run `make readme`"
    assert replace_results_block(readme, block) == readme
    # the block quotes the committed numbers, e.g. the dense accuracy of every network, with n
    agg = Aggregates(rows)
    for network in agg.networks():
        dense = agg.dense(network)
        assert tables.fmt_acc(dense.test_acc_mean, dense.test_acc_std, dense.n_seeds) in block


def test_readme_command_rewrites_the_block_without_torch_or_matplotlib(tmp_path):
    """`make repro` ends with `cs-repro readme`, also on a no-op re-run: it must stay a fraction of a second,
    so it may import neither torch nor matplotlib (each ~1-2 s here)."""
    import subprocess
    import sys

    from cs_repro.report.markdown import README_BEGIN, README_END

    repo = Path(__file__).resolve().parents[1]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nstale\n{README_END}\n\ntail\n")
    probe = ("import sys\nfrom cs_repro.cli import app\n"
             "try:\n    app(['readme', '--results', sys.argv[1], '--readme', sys.argv[2]])\n"
             "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
             "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, str(repo / "metrics" / "results.json"), str(readme)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    text = readme.read_text()
    assert "stale" not in text and "**Scope.**" in text and text.endswith("tail\n")


def test_results_block_marks_single_seeds_and_missing_matches(rows):
    from cs_repro.report.markdown import results_block

    single = [r for r in rows if r["seed"] == 0]
    block = results_block(single, META)
    assert "(n = 1)" in block and "± 0.00" not in block
    assert "**Scope.**" in block and block.count("**Supported.**") + block.count("**Not supported.**") \
        + block.count("**Cannot be judged from this run.**") + block.count(f"**{claims.COVERAGE_VERDICT}.**") == 3
