"""The evaluation stage: every run under runs/ becomes result rows (the report's input), DVC metrics
(`metrics/summary.json`) and DVC plot data. No training happens here; FLOPs are counted from the
ticket masks on a freshly built network.

Every run lists its own rows in its metrics.json (`result_rows`, built by `cs_repro.results.run_row`);
this stage completes them (names, FLOPs of the row's mask, wall-clock cost of the ticket's search) and
knows nothing about methods. Runs without rows (the dense training of magnitude pruning) add none.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from cs_repro.flops import CONVENTION, count_cost
from cs_repro.io import atomic_write_json, read_json
from cs_repro.params import Params
from cs_repro.results import complete_row, ticket_path
from cs_repro.tickets import load_ticket

log = logging.getLogger("cs_repro")


def _timing_dir(metrics_path: Path, runs: Path, timings: Path | None) -> Path:
    """Where a run's timing.json lives: the mirror of its runs/ folder under timings/, else beside it."""
    if timings is not None:
        try:
            mirrored = Path(timings) / metrics_path.parent.relative_to(runs)
        except ValueError:  # not under runs/ (a path given another way): only the folder itself
            return metrics_path.parent
        if mirrored.exists():
            return mirrored
    return metrics_path.parent


def ticket_search_seconds(ticket_file: Path, runs: Path, timings: Path | None = None) -> float:
    """Wall-clock seconds spent finding a ticket, read from the timing of the run that wrote it: its
    folder's run (CS, L0, the CS ablations), the level's cumulative time (IMP), or the dense training
    it was pruned from (one-shot magnitude pruning). 0 where no timing was recorded."""
    ticket_file = Path(ticket_file)
    folder = ticket_file.parent
    if folder.name == "tickets":  # IMP: tickets/level_XX.pt beside the search's metrics.json
        level_timing = _timing_dir(folder.parent / "metrics.json", runs, timings) / "level_timing.json"
        if not level_timing.exists():
            return 0.0
        level = int(ticket_file.stem.removeprefix("level_"))
        return float({r["level"]: r["search_seconds"] for r in read_json(level_timing)["levels"]}.get(level, 0.0))
    if (folder / "metrics.json").exists():
        return float(_timing(_timing_dir(folder / "metrics.json", runs, timings)).get("seconds", 0.0))
    dense = load_ticket(ticket_file).metadata.get("params", {}).get("dense")
    if dense:  # magnitude pruning: the ticket's search is the dense run it pruned
        return float(_timing(_timing_dir(Path(dense) / "metrics.json", runs, timings)).get("seconds", 0.0))
    return 0.0


def _timing(folder: Path) -> dict[str, Any]:
    timing = folder / "timing.json"
    return read_json(timing, "timing") if timing.exists() else {}


class _CostCounter:
    """FLOPs and parameters of a network under a mask; one built model per network."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self._models: dict[str, Any] = {}

    def __call__(self, network: str, masks) -> dict[str, int]:
        from cs_repro.data import DATASETS
        from cs_repro.models import build_model

        net = self.params.network(network)
        spec = DATASETS.get(net.dataset)
        if network not in self._models:
            channels, size, _ = spec.image_shape
            self._models[network] = build_model(net.model, spec.num_classes, channels, size)
        cost = count_cost(self._models[network], spec.image_shape, masks)
        return {"params_total": cost.params_total, "params_nonzero": cost.params_nonzero,
                "flops_dense": cost.flops_dense, "flops_nonzero": cost.flops_nonzero}


def read_runs(runs: Path, folders: Iterable[Path] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path, content) of every metrics.json under `runs`, in a stable order; with `folders` (the run folders
    the pipeline's stages write), only those within one of them. A folder no stage writes any more (an s0
    value or a network taken out of params.yaml) keeps its files in the workspace, and reading them would
    make the results depend on what ran there before."""
    paths = sorted(Path(runs).rglob("metrics.json"))
    if folders is not None:
        declared = {Path(folder).resolve() for folder in folders}
        kept, left = [], []
        for path in paths:
            (left if declared.isdisjoint(path.resolve().parents) else kept).append(path)
        if left:
            log.info("%d run folder(s) under %s belong to no stage of the pipeline (left by an earlier configuration)"
                     " and are not read, e.g. %s", len(left), runs, left[0].parent.relative_to(runs))
        paths = kept
    return [(path, read_json(path, "run metrics")) for path in paths]


def collect_rows(params: Params, runs: Path, timings: Path | None = None,
                 documents: list[tuple[Path, dict[str, Any]]] | None = None,
                 ) -> tuple[list[dict[str, Any]], float, set[str]]:
    """(rows, total compute seconds, hardware names) from every metrics.json under `runs`
    (`documents`: those files already read with `read_runs`)."""
    rows, total_seconds, hardware = [], 0.0, set()
    cost_of = _CostCounter(params)
    documents = read_runs(runs) if documents is None else documents
    for path, doc in documents:
        timing = _timing(_timing_dir(path, runs, timings))
        total_seconds += float(timing.get("seconds", 0.0))
        if "hardware" in timing:
            hardware.add(timing["hardware"])
    for path, doc in documents:
        network = doc.get("network")
        if network not in params.networks:
            log.warning("%s: network %r is not in params.yaml; skipped", path, network)
            continue
        for written in doc.get("result_rows", []):
            rows.append(complete_row(
                written, network=network, dataset=params.networks[network].dataset,
                search_seconds=ticket_search_seconds(ticket_path(path.parent, written, "searched_ticket"), runs, timings),
                cost=cost_of(network, load_ticket(ticket_path(path.parent, written)).masks)))
    return rows, total_seconds, hardware


# Files a pipeline run rewrites itself: their changes say nothing about the code or params that ran.
RUN_WRITTEN = (":(exclude)dvc.lock", ":(exclude,glob)**/.gitignore", ":(exclude)metrics", ":(exclude)figures",
               ":(exclude)README.md")


# A run "collapsed" when its validation accuracy fell back to chance after it had learned: the
# network died (e.g. CS's effective weights blew up as the temperature rose) and what it wrote after
# that point (a mask frozen at the moment of death) is not a search result.
LEARNED_ABOVE_CHANCE = 0.20
CHANCE_MARGIN = 0.02


def collapse_of(doc: dict[str, Any], num_classes: int) -> str | None:
    """One sentence saying where a run collapsed to chance accuracy, or None if it did not."""
    chance = 1.0 / num_classes
    best = 0.0
    for row in doc.get("epochs", []):
        # without a validation set (val_size 0), the training accuracy shows the collapse
        which = "validation" if row.get("val_accuracy") is not None else "training"
        accuracy = float(row["val_accuracy"] if which == "validation" else row["train_accuracy"])
        loss = float(row["train_loss"])
        where = f"{row.get('phase_name') or 'phase ' + str(row['phase'] + 1)}, epoch {row['epoch'] + 1}"
        if loss != loss or loss in (float("inf"), float("-inf")):
            return f"training loss became {loss} in {where}"
        if best >= chance + LEARNED_ABOVE_CHANCE and accuracy <= chance + CHANCE_MARGIN:
            return (f"{which} accuracy fell to {100 * accuracy:.1f}% (chance: {100 * chance:.0f}%) in {where}, "
                    f"after {100 * best:.1f}%; training loss that epoch {loss:.3g}")
        best = max(best, accuracy)
    return None


def collapsed_runs(params: Params, runs: Path, documents: list[tuple[Path, dict[str, Any]]] | None = None) -> list[str]:
    """Every run under `runs` that collapsed, as 'network method setting seed=N: where'."""
    from cs_repro.data import DATASETS

    found = []
    for path, doc in read_runs(runs) if documents is None else documents:
        network = doc.get("network")
        if network not in params.networks or "epochs" not in doc:
            continue
        what = collapse_of(doc, DATASETS.get(params.networks[network].dataset).num_classes)
        if what:
            label = " ".join(str(x) for x in (network, doc.get("method"), doc.get("setting")) if x)
            found.append(f"{label} seed={doc.get('seed')}: {what} ({path.parent.relative_to(runs)})")
    return found


#: Set in the Docker image: the project's commit it was built from (its own repository is a one-commit copy).
COMMIT_ENV = "CS_REPRO_COMMIT"


def git_commit() -> str:
    """The commit the results come from; "+changes" when tracked files (code, params) differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *RUN_WRITTEN],
                               capture_output=True, text=True, timeout=10)
        commit = os.environ.get(COMMIT_ENV) or out.stdout.strip()
        changed = dirty.stdout.strip() and not commit.endswith("+changes")
        return commit + ("+changes" if changed else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def evaluate_runs(params: Params, runs: Path, out: Path, timings: Path | None = None,
                  folders: Iterable[Path] | None = None) -> dict[str, Any]:
    """Result rows, metrics and plot data from the runs under `runs` (only those within `folders`, if given:
    see `read_runs`)."""
    from cs_repro.report.aggregate import MATCHING_RULE, Aggregates

    documents = read_runs(runs, folders)  # read once: rows and the collapse check both walk every run
    rows, total_seconds, hardware = collect_rows(params, runs, timings, documents)
    # A ticket that keeps no weight at all (s0 too low) predicts one class; it has no place on a log axis.
    empty = [r for r in rows if r["remaining_weights"] <= 0.0]
    for row in empty:
        log.warning("%s %s %s seed %d keeps no weights; listed under meta.empty_tickets, not plotted",
                    row["network"], row["method"], row["setting"], row["seed"])
    rows = [r for r in rows if r["remaining_weights"] > 0.0]
    if not rows:
        from cs_repro.errors import UserError

        raise UserError(f"no finished runs under {runs}: run the search stages first (dvc repro)")
    meta = {
        "profile": params.profile,
        "git_commit": git_commit(),
        "hardware": "; ".join(sorted(hardware)) or "not recorded",
        "seeds": sorted({r["seed"] for r in rows}),
        "total_compute_seconds": total_seconds,
        "flops_convention": CONVENTION,
        "matching_rule": MATCHING_RULE,
        "empty_tickets": sorted({f"{r['network']} {r['method']} {r['setting']} seed={r['seed']}" for r in empty}),
        "collapsed_runs": collapsed_runs(params, runs, documents),
        "diverged_controls": diverged_controls(documents),
        "cs_ticket_definition": params.cs.mask_scale,
    }
    for run in meta["collapsed_runs"]:
        log.warning("collapsed run: %s", run)
    atomic_write_json({"rows": rows, "meta": meta}, out / "results.json")
    aggregates = Aggregates(rows)
    summary = summarize(aggregates)
    atomic_write_json(summary, out / "summary.json")
    write_plot_data(aggregates, out / "plots")
    log.info("evaluated %d result rows from %s", len(rows), runs)
    return summary


def diverged_controls(documents: Iterable[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The control retrainings that diverged (methods/retrain.py records them instead of failing): which ticket,
    which control, the seed, and the epoch and reason; sorted, so that results.json does not depend on the
    order the runs were read in."""
    found = []
    for _, doc in documents:
        diverged, ticket = doc.get("diverged"), doc.get("ticket") or {}
        if not isinstance(diverged, dict):
            continue
        found.append({"network": doc.get("network"), "method": ticket.get("method"), "setting": ticket.get("setting"),
                      "variant": doc.get("variant"), "seed": doc.get("seed"), "epoch": diverged.get("epoch"),
                      "reason": diverged.get("reason")})
    return sorted(found, key=lambda d: tuple(str(d[k]) for k in ("network", "method", "setting", "variant", "seed")))


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 4)


def summarize(aggregates) -> dict[str, Any]:
    """DVC's headline metrics, short enough for `dvc exp show`: per network the dense accuracy and, per
    ticket-search method (not the ablations, not the controls), its sparsest matching ticket's remaining
    weights and accuracy and the epochs it cost, retraining included (null: no matching ticket).
    Everything else is in results.json and REPORT.md."""
    summary: dict[str, Any] = {}
    for network in aggregates.networks():
        entry: dict[str, Any] = {}
        dense = aggregates.dense(network)
        if dense is not None:
            entry["dense_acc"] = _pct(dense.test_acc_mean)
        for method in aggregates.headline_methods(network):
            match = aggregates.sparsest_matching(network, method)
            entry[method] = {
                "remaining": _pct(match.remaining_mean) if match else None,
                "acc": _pct(match.test_acc_mean) if match else None,
                "epochs": aggregates.cost_to_reach(match) if match else None,
            }
        summary[network] = entry
    return summary


def write_plot_data(aggregates, out_dir: Path) -> None:
    """Data of the DVC plots declared in dvc.yaml: ``tickets.csv`` (every method's rewound tickets) and
    ``pruning.csv`` (the pruning track, best variant per setting), one row per setting, with the display
    names that the plots' legend and panels show (template: .dvc/plots/accuracy_vs_remaining.json)."""
    import csv
    import io

    from cs_repro.io import atomic_write_text
    from cs_repro.report.rows import pretty_dataset, pretty_method, pretty_network

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.csv"):  # earlier layouts (one file per network)
        if stale.name not in ("tickets.csv", "pruning.csv"):
            stale.unlink()
    header = ["network", "method", "setting", "remaining_weights_percent", "test_accuracy_percent"]
    tables: dict[str, list[list[str]]] = {"tickets": [header], "pruning": [header]}
    for network in aggregates.networks():
        panel = f"{pretty_network(network)} on {pretty_dataset(aggregates.dataset(network))}"
        for method in aggregates.methods(network, track="ticket", variant="rewind"):
            for group in aggregates.groups_for(network, method):
                tables["tickets"].append([panel, pretty_method(method), group.setting,
                                          f"{100 * group.remaining_mean:.6g}", f"{100 * group.test_acc_mean:.6g}"])
        for method in aggregates.methods(network, track="pruning"):
            for group in aggregates.best_pruning_groups(network, method):
                tables["pruning"].append([panel, pretty_method(method), group.setting,
                                          f"{100 * group.remaining_mean:.6g}", f"{100 * group.test_acc_mean:.6g}"])
    for name, rows in tables.items():
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        atomic_write_text(buffer.getvalue(), out_dir / f"{name}.csv")
