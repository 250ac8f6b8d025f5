"""The result row: what every run reports, and the one place that builds it.

A run writes its rows into its metrics.json (``result_rows``) with :func:`run_row`; the evaluation stage
completes each one with what only it can know (network and dataset names, FLOPs and parameter counts of
the mask, the wall-clock cost of the ticket's search) through :func:`complete_row`, and knows nothing about
methods. ``report.rows`` validates the completed rows for the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Field name -> accepted Python types, in the order rows are written.  ``bool`` is never a number.
ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "network": (str,),
    "dataset": (str,),
    "method": (str,),
    "variant": (str,),
    "track": (str,),
    "seed": (int,),
    "setting": (str,),
    "remaining_weights": (int, float),
    "sparsity": (int, float),
    "test_accuracy": (int, float),
    "val_accuracy": (int, float, type(None)),  # None: the run had no validation set (val_size 0)
    "search_epochs": (int, float),
    "search_seconds": (int, float),
    "retrain_epochs": (int,),
    "layer_remaining": (dict,),
    "params_total": (int,),
    "params_nonzero": (int,),
    "flops_dense": (int,),
    "flops_nonzero": (int,),
}

#: 'ticket': a mask retrained from its rewind point (or a control of one); 'pruning': a network pruned
#: during or after training and reported as it is (or fine-tuned), without rewinding.
TRACKS = ("ticket", "pruning")


def run_row(*, method: str, variant: str, track: str, seed: int, setting: str, ticket_metadata: dict[str, Any],
            test_accuracy: float, val_accuracy: float, search_epochs: float, retrain_epochs: int,
            ticket_file: Path | str, run_dir: Path | str, searched_ticket: Path | str | None = None) -> dict[str, Any]:
    """A row as a run writes it into ``run_dir``/metrics.json (deterministic: no wall-clock, no absolute
    path). ``ticket_file`` holds the mask the row was measured with, stored relative to ``run_dir`` so that
    a run folder can move; remaining weights come from that ticket's metadata. ``searched_ticket`` is the
    ticket whose search the row's cost is (a random control's mask is drawn, its cost is the source's)."""
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    return {
        "method": method, "variant": variant, "track": track, "seed": seed, "setting": setting,
        "remaining_weights": ticket_metadata["remaining_weights"], "layer_remaining": ticket_metadata["layer_remaining"],
        "test_accuracy": test_accuracy, "val_accuracy": val_accuracy,
        "search_epochs": search_epochs, "retrain_epochs": retrain_epochs,
        "ticket_file": os.path.relpath(ticket_file, run_dir),
        **({"searched_ticket": os.path.relpath(searched_ticket, run_dir)} if searched_ticket is not None else {}),
    }


def ticket_path(run_dir: Path, written: dict[str, Any], which: str = "ticket_file") -> Path:
    """Where a ticket named by a row that a run in ``run_dir`` wrote lives: the row's mask
    (``ticket_file``) or the ticket whose search it costs (``searched_ticket``, by default the same)."""
    return Path(os.path.normpath(Path(run_dir) / written.get(which, written["ticket_file"])))


def complete_row(written: dict[str, Any], *, network: str, dataset: str, search_seconds: float,
                 cost: dict[str, int]) -> dict[str, Any]:
    """A run's row with the evaluation stage's fields, every field in ROW_FIELDS order."""
    values = {**written, "network": network, "dataset": dataset, "sparsity": 1.0 - written["remaining_weights"],
              "search_seconds": search_seconds, **cost}
    return {name: values[name] for name in ROW_FIELDS}
