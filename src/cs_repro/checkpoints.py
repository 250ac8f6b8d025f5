"""Where resume checkpoints live, and when a finished run's checkpoint is deleted.

Checkpoints sit in `.cache/checkpoints/`, outside every DVC output, because DVC deletes a stage's outputs
before it runs the stage again. A finished run's checkpoint is normally deleted at once. Inside
`stage_scope()` (every CLI command) the deletion waits until the whole command has succeeded: a stage
that runs several trainings (a ticket's retraining variants, IMP control levels) and is killed in its
third run then finds the first two at their final epoch and only rewrites their outputs, instead of
training them again. A checkpoint that failed its digest check was set aside as `<name>.pt.damaged` (one per
run, see `io.load_checkpoint`); it goes with the checkpoint once its run has finished. Light on purpose (no
torch): the CLI enters the scope for every command.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cs_repro.io import damaged_copy, is_writer

CHECKPOINT_DIR = Path(".cache/checkpoints")

_finished_in_stage: list[Path] | None = None


def _delete(path: Path) -> None:
    if not is_writer():
        return
    path.unlink(missing_ok=True)
    damaged_copy(path).unlink(missing_ok=True)


def release(path: Path) -> None:
    """A run has written its outputs: delete its checkpoint (and any damaged one it replaced) now, or when
    the enclosing stage succeeds."""
    if _finished_in_stage is None:
        _delete(Path(path))
    else:
        _finished_in_stage.append(Path(path))


@contextmanager
def stage_scope() -> Iterator[None]:
    """Keep finished runs' checkpoints until the block ends without an exception, then delete them."""
    global _finished_in_stage
    outer, _finished_in_stage = _finished_in_stage, []
    try:
        yield
        for path in _finished_in_stage:
            _delete(path)
    finally:
        _finished_in_stage = outer
