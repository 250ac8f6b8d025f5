"""Stage `evaluate`: every run's rows into metrics/results.json, DVC metrics (summary.json) and plot data."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import DEFAULT_PARAMS, ParamsOption, load, run_stage


def evaluate(
    runs: Annotated[Path, typer.Option(help="the runs/ directory written by the search and retrain stages")] = Path("runs"),
    timings: Annotated[Path, typer.Option(help="the timings/ directory (mirrors runs/)")] = Path("timings"),
    out: Annotated[Path, typer.Option(help="metrics directory")] = Path("metrics"),
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Collect every run into metrics/results.json, DVC metrics (summary.json) and plot data."""
    from cs_repro.evaluation import evaluate_runs

    evaluate_runs(load(params), runs, out, timings)


if __name__ == "__main__":
    run_stage(evaluate)
