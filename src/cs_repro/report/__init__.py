"""Report floor: result rows -> figures, tables and ``REPORT.md``.  No training happens here.

    generate(Path("metrics/results.json"), Path("figures"))

writes ``figures/{ticket_search,pruning,search_cost,layer_sparsity}.{png,pdf}`` (those with data),
``figures/tables/{ticket_search,pruning,layer_budgets,inference_cost,controls,sensitivity}.{md,csv,tex}`` (those with data) and ``figures/REPORT.md``.
"""

from __future__ import annotations

from pathlib import Path

from cs_repro.report.aggregate import MATCHING_RULE, SEARCH_COST_RULE, STD_RULE, Aggregates
from cs_repro.report.rows import Row, RowError, load_results

__all__ = ["MATCHING_RULE", "SEARCH_COST_RULE", "STD_RULE", "Aggregates", "Row", "RowError",
           "generate", "load_results"]


def generate(results_json: Path, out_dir: Path, show_optional: bool = False,
             verdicts_json: Path | None = None) -> dict[str, list[Path]]:
    """Write every figure, table and the report for ``results_json`` into ``out_dir`` (and every verdict with its
    stability into ``verdicts_json``, a DVC metrics file, when given).

    Returns {"figures": [...png/pdf], "tables": [...md/csv/tex], "report": [REPORT.md]}.
    """
    from cs_repro.report import figures, markdown, tables
    from cs_repro.report.captions import FIGURE_CAPTIONS

    rows, meta = load_results(results_json)
    agg = Aggregates(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_CAPTIONS:  # no stale figure from an earlier run
        for ext in ("png", "pdf"):
            (out_dir / f"{name}.{ext}").unlink(missing_ok=True)
    drawn = figures.make_all(agg, out_dir, show_optional)
    table_paths = tables.write_tables(agg, out_dir / "tables", meta)
    from cs_repro.report.claims import judge_everything, verdicts_summary

    judged = judge_everything(agg)  # the re-judgements are the report's dearest part: once for both files
    report = markdown.write_report(agg, meta, out_dir, show_optional, judged)
    if verdicts_json is not None:
        from cs_repro.io import atomic_write_json

        atomic_write_json(verdicts_summary(judged), verdicts_json)
    return {
        "figures": [out_dir / f"{name}.{ext}" for name in drawn for ext in ("png", "pdf")],
        "tables": table_paths,
        "report": [report],
    }
