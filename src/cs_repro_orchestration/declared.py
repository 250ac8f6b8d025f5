"""What the pipeline in a folder declares, read through DVC's own API (no `dvc` process, no torch)."""

from __future__ import annotations

from pathlib import Path


def declared_outputs(pipeline_dir: Path) -> list[Path]:
    """Every output path (absolute) that a stage of `pipeline_dir`'s dvc.yaml writes, with foreach/matrix
    expanded from its params.yaml as `dvc repro` would expand them."""
    from dvc.repo import Repo  # imported here: the rest of this package runs `dvc` as a process

    with Repo(str(pipeline_dir)) as repo:
        return [Path(out.fs_path) for stage in repo.index.stages for out in stage.outs]
