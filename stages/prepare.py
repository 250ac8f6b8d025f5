"""Stage `prepare@<dataset>`: a raw dataset (checksums verified) into one tensor file under data/prepared/."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from cs_repro.stage_cli import DEFAULT_PARAMS, ParamsOption, load, log, run_stage


def prepare(
    dataset: Annotated[str, typer.Argument(help="dataset registry name, e.g. fashion_mnist or cifar10")],
    params: ParamsOption = DEFAULT_PARAMS,
    out: Annotated[Optional[Path], typer.Option(help="output file (default data/prepared/<dataset>.pt)")] = None,
) -> None:
    """Read a raw dataset (checksums verified) into one tensor file under data/prepared/."""
    from cs_repro.data.prepared import prepare_dataset, prepared_path

    summary = prepare_dataset(load(params), dataset, out or prepared_path(dataset))
    log.info("prepared %s: %d training and %d test images", dataset, summary["train"], summary["test"])


if __name__ == "__main__":
    run_stage(prepare)
