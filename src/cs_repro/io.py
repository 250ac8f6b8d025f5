"""Atomic writes and safe loads. Every artifact is written to a temporary file and renamed, so an
interrupted run never leaves a half-written file behind; every tensor file loads with
`weights_only=True`, so a ticket someone sends you cannot run code."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cs_repro.errors import UserError

log = logging.getLogger("cs_repro")


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, lambda stream: stream.write(text.encode()))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda stream: stream.write(text.encode()))


def safe_torch_load(path: Path, what: str = "file") -> Any:
    """torch.load with weights_only=True; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusing code, truncated zip, ...
        raise UserError(f"{what} {path} cannot be loaded safely ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None


def load_checkpoint(path: Path) -> Any | None:
    """A resume checkpoint, or None when there is none. A damaged one is set aside, not trusted."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        aside = path.with_suffix(path.suffix + ".damaged")
        os.replace(path, aside)
        log.warning("checkpoint %s is unreadable (%s); moved to %s and starting over", path, error, aside)
        return None


def read_json(path: Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{what} {path} is not valid JSON ({error})") from None
