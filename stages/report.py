"""Stage `report`: figures, tables and figures/REPORT.md from metrics/results.json alone."""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.errors import UserError
from cs_repro.stage_cli import log, run_stage


def report(
    results: Annotated[Path, typer.Option(help="metrics/results.json from the evaluate stage")] = Path("metrics/results.json"),
    out: Annotated[Path, typer.Option(help="figures directory")] = Path("figures"),
    show_optional: Annotated[bool, typer.Option(help="also draw IMP-C and the controls")] = False,
    verdicts: Annotated[Path, typer.Option(help="every verdict with its stability (a DVC metrics file)")] = Path(
        "metrics/verdicts.json"),
) -> None:
    """Figures (PNG, PDF), tables (Markdown, CSV, LaTeX) and figures/REPORT.md, from the metrics alone."""
    from cs_repro.report import generate

    if not results.exists():
        raise UserError(f"{results} does not exist: run `dvc repro evaluate` first")
    generate(results, out, show_optional=show_optional, verdicts_json=verdicts)
    log.info("figures, tables and REPORT.md written to %s", out)


if __name__ == "__main__":
    run_stage(report)
