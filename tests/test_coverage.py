"""The report's coverage, edge and stability rules (report/coverage.py, report/stability.py) on hand-made rows:
a verdict that rests on a gap in the grid or on a method stopped at its edge says so and names the settings that
fill it; a verdict that flips when one seed is left out is marked fragile."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from cs_repro.report import Aggregates, claims, generate
from cs_repro.report.coverage import MAX_GAP, every_hole, exp_run_commands, suggest
from cs_repro.report.claims import judge_everything, verdicts_summary

NET = "lenet300_100"


def row(method, setting, seed, remaining, accuracy, *, track="ticket", variant="rewind", epochs=6.0):
    return {
        "network": NET, "dataset": "fashion_mnist", "method": method, "variant": variant, "track": track,
        "seed": seed, "setting": setting, "remaining_weights": remaining, "sparsity": 1 - remaining,
        "test_accuracy": accuracy, "val_accuracy": accuracy, "search_epochs": epochs, "search_seconds": 1.0,
        "retrain_epochs": 6, "layer_remaining": {"fc1.weight": remaining}, "params_total": 1000,
        "params_nonzero": round(1000 * remaining), "flops_dense": 1000, "flops_nonzero": round(1000 * remaining),
    }


def both_seeds(method, points, **kwargs):
    """points: [(setting, remaining, accuracy)], the same on seeds 0 and 1."""
    return [row(method, setting, seed, rw, acc, **kwargs) for setting, rw, acc in points for seed in (0, 1)]


DENSE = both_seeds("dense", [("dense", 1.0, 0.900)])  # threshold 0.900 (no spread)


def imp(levels, matching_until):
    return both_seeds("imp", [(f"level={lvl}", 0.8 ** lvl, 0.905 if lvl <= matching_until else 0.880)
                              for lvl in range(levels + 1)], epochs=6.0)


#: CS as the quick profile had it: nothing between 8.4% and 0.77% remaining.
CS_WITH_GAP = [("s0=0.001", 0.15, 0.905), ("s0=0", 0.084, 0.903), ("s0=-0.02", 0.0077, 0.850)]


def test_a_comparison_across_a_gap_cannot_be_judged_and_names_s0_values_inside_it():
    agg = Aggregates(DENSE + imp(14, matching_until=14) + both_seeds("cs", CS_WITH_GAP, epochs=18.0))
    verdict, sentence = claims.judge_claim1(agg)
    assert verdict == claims.COVERAGE_VERDICT
    assert "CS's tickets jump from 8.40% [s0=0] to 0.770% [s0=-0.02] (10.9x)" in sentence
    (gap,) = [h for h, _ in every_hole(agg) if h.method == "cs"]
    suggestion = suggest(agg, gap)
    assert suggestion.key == "sweep.s0"
    # ceil(log2(10.9)) = 4 pieces, 3 new values, every one strictly inside the gap and in order
    values = suggestion.values
    assert len(values) == 3 and 0 > values[0] > values[1] > values[2] > -0.02
    # each lies where linear interpolation in s0 against log(remaining) puts a ticket MAX_GAP^k below 8.4%
    for value, target in zip(values, (0.084 * (0.0077 / 0.084) ** (i / 4) for i in (1, 2, 3))):
        t = math.log(target / 0.084) / math.log(0.0077 / 0.084)
        assert value == pytest.approx(-0.02 * t, abs=0.0006)
    # CS's tickets retrained another way share CS's grid: their gap is listed once; two one-setting ablations at
    # the same s0 but other sparsities are two edges
    retrained = both_seeds("cs_released_scale", CS_WITH_GAP, epochs=18.0)
    ablations = both_seeds("cs_beta1", [("s0=0", 0.18, 0.905)]) + both_seeds("cs_released_clamp", [("s0=0", 0.25, 0.905)])
    listed = every_hole(Aggregates(agg.rows + retrained + ablations))
    assert [h.method for h, _ in listed].count("cs") == 1 and "cs_released_scale" not in [h.method for h, _ in listed]
    assert {"cs_beta1", "cs_released_clamp"} <= {h.method for h, _ in listed if h.is_edge}
    # CS's sensitivity sweep changes other knobs at one s0: not a grid along sparsity, never listed
    sweep = both_seeds("cs_sensitivity", [("lambda=1e-07 (default 1e-08, s0=0)", 0.05, 0.905)])
    assert "cs_sensitivity" not in {h.method for h, _ in every_hole(Aggregates(agg.rows + sweep))}
    # the edge of IMP (still matching at level 14) is listed with enough levels to halve its remaining weights
    (edge,) = [h for h, _ in every_hole(agg) if h.method == "imp"]
    assert edge.is_edge and suggest(agg, edge).text() == "set imp.levels to 18"
    (command,) = exp_run_commands(agg, every_hole(agg))
    assert command == "dvc exp run -S 'sweep.s0=[0.001,0,-0.005,-0.01,-0.015,-0.02]' -S imp.levels=18"

    # filling the gap where the suggestion says (a ticket at each value, at its target sparsity) removes it
    filled = [(f"s0={v:g}", 0.084 * (0.0077 / 0.084) ** (i / 4), acc)
              for i, (v, acc) in enumerate(zip(values, (0.880, 0.870, 0.860)), start=1)]
    agg = Aggregates(DENSE + imp(18, matching_until=14) + both_seeds("cs", CS_WITH_GAP + filled, epochs=18.0))
    assert [h for h, _ in every_hole(agg) if h.method in ("cs", "imp")] == []
    verdict, sentence = claims.judge_claim1(agg)
    assert verdict == claims.NOT_SUPPORTED and "coverage" not in sentence  # IMP's 4.40% beats CS's 8.40%


def test_the_edge_counts_only_for_the_method_that_keeps_more_weights():
    covered_cs = [(f"s0={s0}", rw, acc) for s0, rw, acc in
                  ((0.01, 0.50, 0.905), (0.005, 0.30, 0.905), (0, 0.20, 0.904), (-0.005, 0.12, 0.902),
                   (-0.01, 0.08, 0.880))]
    # IMP still matches at its last level (4.4%) but is already the sparser: CS's 12% loses either way
    agg = Aggregates(DENSE + imp(14, matching_until=14) + both_seeds("cs", covered_cs, epochs=18.0))
    sparse, _, clause = claims.ticket_comparison(agg, NET, "cs", "imp")
    assert sparse == claims.NO and "coverage" not in clause
    assert any(h.method == "imp" and h.is_edge for h, _ in every_hole(agg))  # but the report lists the edge
    # IMP stopped at level 5 (32.8%) while matching, CS matches down to 12%: IMP may match sparser
    agg = Aggregates(DENSE + imp(5, matching_until=5) + both_seeds("cs", covered_cs, epochs=18.0))
    sparse, _, clause = claims.ticket_comparison(agg, NET, "cs", "imp")
    assert sparse == claims.COVERAGE
    assert "IMP still matches at its sparsest setting, 32.77% [level=5]: it may match sparser; set imp.levels to 9" \
        in clause


def test_an_interpolated_pruning_reading_across_a_gap_cannot_be_judged():
    cs = both_seeds("cs", [("s0=0", 0.084, 0.86), ("s0=-0.02", 0.0077, 0.84)], track="pruning", variant="pruned")
    gmp = both_seeds("gmp", [("sparsity=0.95", 0.05, 0.862)], track="pruning", variant="pruned")
    verdict, sentence = claims.judge_claim3(Aggregates(DENSE + cs + gmp))
    assert verdict == claims.COVERAGE_VERDICT and "add s0 ≈" in sentence
    # a CS network at 5.2% (within 5% of GMP's 5%): measured, judged
    close = both_seeds("cs", [("s0=-0.001", 0.052, 0.855)], track="pruning", variant="pruned")
    assert claims.judge_claim3(Aggregates(DENSE + cs + close + gmp))[0] == claims.NOT_SUPPORTED


def pruning_rows(cs_seed1_accuracy):
    """CS vs GMP on the pruning track: CS ahead at 5% on both seeds; at 3% CS 0.90 on seed 0 and
    ``cs_seed1_accuracy`` on seed 1, GMP 0.89 and 0.885."""
    cs = [row("cs", "s0=0", s, 0.05, 0.90, track="pruning", variant="pruned") for s in (0, 1)]
    cs += [row("cs", "s0=-0.01", 0, 0.03, 0.90, track="pruning", variant="pruned"),
           row("cs", "s0=-0.01", 1, 0.03, cs_seed1_accuracy, track="pruning", variant="pruned")]
    gmp = [row("gmp", "sparsity=0.95", s, 0.05, 0.88, track="pruning", variant="pruned") for s in (0, 1)]
    gmp += [row("gmp", "sparsity=0.97", 0, 0.03, 0.89, track="pruning", variant="pruned"),
            row("gmp", "sparsity=0.97", 1, 0.03, 0.885, track="pruning", variant="pruned")]
    return DENSE + cs + gmp


def test_a_verdict_that_flips_when_one_seed_is_left_out_is_fragile(tmp_path):
    # means at 3%: CS 0.89 vs GMP 0.8875 -> supported; seed 1 alone: 0.88 vs 0.885 -> not supported
    agg = Aggregates(pruning_rows(cs_seed1_accuracy=0.88))
    assert claims.judge_claim3(agg)[0] == claims.SUPPORTED
    judged = {j.key: j for j in judge_everything(agg)}
    stability = judged["claim3"].stability
    assert stability.fragile and stability.flips == (("seed 0", claims.NOT_SUPPORTED),)
    assert stability.text() == 'fragile: leaving out seed 0 makes it "Not supported"'
    # leaving out a setting that only opens a gap, or seed 1, changes nothing
    assert verdicts_summary(list(judged.values()))["claim3"] == {
        "verdict": claims.SUPPORTED, "stability": "fragile", "flipped_by": "seed 0"}
    # the same with CS ahead on both seeds: stable, and REPORT.md and verdicts.json say so
    stable = pruning_rows(cs_seed1_accuracy=0.895)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": stable, "meta": {"profile": "t", "seeds": [0, 1]}}))
    generate(results, tmp_path / "figures", verdicts_json=tmp_path / "verdicts.json")
    report = (tmp_path / "figures" / "REPORT.md").read_text()
    section = report.split("3. *", 1)[1].split("\n## ", 1)[0]
    assert "**Supported**" in section and "*Stability:* stable: the same with any one of the 6 seeds or settings" \
        in section
    assert json.loads((tmp_path / "verdicts.json").read_text())["claim3"]["stability"] == "stable"


def test_suggest_settings_prints_the_report_s_coverage_list(tmp_path):
    rows = DENSE + imp(14, matching_until=14) + both_seeds("cs", CS_WITH_GAP, epochs=18.0)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": rows, "meta": {"profile": "t", "seeds": [0, 1]}}))
    printed = subprocess.run(["cs-repro", "suggest-settings", "--results", str(results)], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    generate(results, tmp_path / "figures")
    report = (tmp_path / "figures" / "REPORT.md").read_text()
    coverage = report.split("## Coverage", 1)[1].split("\n## ", 1)[0]
    assert printed[-1].startswith("dvc exp run -S 'sweep.s0=[") and printed[-1] in coverage
    for line in printed[:-1]:
        assert f"- {line}." in coverage
    # no gaps: one line saying so
    covered = DENSE + imp(3, matching_until=2) + both_seeds("cs", [("s0=0", 0.5, 0.9), ("s0=-0.01", 0.3, 0.8)])
    results.write_text(json.dumps({"rows": covered, "meta": {}}))
    out = subprocess.run(["cs-repro", "suggest-settings", "--results", str(results)], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith(f"no gaps: every method's neighbouring tickets are within {MAX_GAP:g}x")
