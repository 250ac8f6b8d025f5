"""What the pipeline in a folder declares, read through DVC's own API (no `dvc` process, no torch)."""

from __future__ import annotations

from pathlib import Path

from cs_repro.errors import UserError


def declared_outputs(pipeline_dir: Path) -> list[Path]:
    """Every output path (absolute) that a stage of `pipeline_dir`'s dvc.yaml writes, with foreach/matrix
    expanded from its params.yaml as `dvc repro` would expand them. UserError (one line) where DVC cannot
    read that pipeline: not a DVC project, or a dvc.yaml it rejects."""
    # imported here: the rest of this package runs `dvc` as a process
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(pipeline_dir)) as repo:
            return [Path(out.fs_path) for stage in repo.index.stages for out in stage.outs]
    except DvcException as error:
        raise UserError(f"cannot read the stages of {pipeline_dir}: {error}") from None
