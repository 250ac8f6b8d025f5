"""Stage `evaluate`: every run's rows into metrics/results.json, DVC metrics (summary.json) and plot data."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from cs_repro.stage_cli import DEFAULT_PARAMS, ParamsOption, load, run_stage


def evaluate(
    runs: Annotated[Path, typer.Option(help="the runs/ directory written by the search and retrain stages")] = Path("runs"),
    timings: Annotated[Path, typer.Option(help="the timings/ directory (mirrors runs/)")] = Path("timings"),
    out: Annotated[Path, typer.Option(help="metrics directory")] = Path("metrics"),
    params: ParamsOption = DEFAULT_PARAMS,
    pipeline: Annotated[Optional[Path], typer.Option(
        help="read only the runs that this folder's dvc.yaml stages write (runs left by an earlier configuration "
             "are skipped); default: the current folder when it holds a dvc.yaml, else every run under --runs")] = None,
) -> None:
    """Collect every run into metrics/results.json, DVC metrics (summary.json) and plot data."""
    from cs_repro.evaluation import evaluate_runs

    if pipeline is None and Path("dvc.yaml").exists():
        pipeline = Path(".")
    folders = None
    if pipeline is not None:
        from cs_repro_orchestration.declared import declared_outputs

        folders = declared_outputs(pipeline)
    evaluate_runs(load(params), runs, out, timings, folders)


if __name__ == "__main__":
    run_stage(evaluate)
