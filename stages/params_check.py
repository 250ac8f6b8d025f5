"""Stage `params_check`: every rule of params.yaml, checked before the stages that read it.

`make repro` runs `cs-repro params --check` first; `dvc repro` and `dvc exp run -S key=value` do not
go through make, and a value that empties a fan-out (`sweep.seeds=[]`) leaves DVC no stage that would
load params and say so (it failed on a missing runs/ instead). This stage re-runs whenever params.yaml
changes (~3 s) and writes the same bytes every time it passes, so it never re-runs what follows it.
"""

from pathlib import Path
from typing import Annotated

import typer

from cs_repro.stage_cli import DEFAULT_PARAMS, ParamsOption, load, log, run_stage

PASSED = "params.yaml passed every check of `cs-repro params --check`\n"


def params_check(
    out: Annotated[Path, typer.Option(help="file written when the params pass (always the same bytes)")],
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Check the params file as `cs-repro params --check` does; one line naming the key when it fails."""
    from cs_repro.io import atomic_write_text

    checked = load(params)
    warning = checked.cpu.oversubscribed()
    if warning:
        log.warning("%s", warning)
    atomic_write_text(PASSED, out)


if __name__ == "__main__":
    run_stage(params_check)
