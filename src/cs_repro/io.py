"""Atomic writes and safe loads. Every artifact is written to a temporary file and renamed, so an
interrupted run never leaves a half-written file behind; every tensor file loads with
`weights_only=True`, so a ticket someone sends you cannot run code; a resume checkpoint carries the
sha256 of its payload, checked before it is trusted (bit rot on a shared file system or a Docker volume
must not turn into a published number)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import logging
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cs_repro.errors import UserError

log = logging.getLogger("cs_repro")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; an ordinary write gives 0666 minus the umask, which a shared SLURM cache or a
# Docker volume read from the host relies on.
_FILE_MODE = 0o666 & ~_current_umask()


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files an interrupted write of `path` left (a kill -9 mid-write); each write of
    one path happens in one process at a time, so any such file is dead."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{_temporary_prefix(path)}*.tmp")) if path.parent.is_dir() else []
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a write take effect right after it: raised inside torch.save's zip writer,
    KeyboardInterrupt turns into a RuntimeError from its cleanup (a traceback, not a clean stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt


def is_writer() -> bool:
    """Whether this process writes files: always, except the ranks other than 0 of a run on several processes
    (`cs_repro.launch` sets the variable), which hold the same state and must not race rank 0's writes."""
    return os.environ.get("CS_REPRO_RANK", "0") == "0"


def _atomic_write(path: Path, write) -> None:
    if is_writer():
        with _interrupts_deferred():
            _write_then_rename(path, write)
    _wait_for_rank_0()


def _wait_for_rank_0() -> None:
    """On several processes, every rank passes each write together: the others may read the file next (a
    ticket's digest, a dense network), so they wait until rank 0's copy is there."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _write_then_rename(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        os.fchmod(handle, _FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# torch is imported where it is used: the JSON and text writers serve commands that never touch a tensor
# (`cs-repro readme` rewrites the README in 0.4 s instead of 2 s).
def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save, atomically, of a copy in which no string is shared (see `_unshared`)."""
    import torch

    unshared = _unshared(obj)
    _atomic_write(path, lambda stream: torch.save(unshared, stream))


def _unshared(obj: Any) -> Any:
    """The same values with every string, dict, list and tuple a new object. Pickle writes an object it has
    already written as a reference to it, so a file's bytes followed which equal strings happened to be one
    object: a resumed run's mask names come from its checkpoint, a fresh run's from its config, and the two
    tickets differed in bytes, not in values. Tensors are left as they are."""
    if type(obj) is str:
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if isinstance(obj, dict):
        copy = type(obj)((_unshared(key), _unshared(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):  # a module state_dict's version record
            copy._metadata = _unshared(obj._metadata)
        return copy
    if type(obj) in (list, tuple):
        return type(obj)(_unshared(item) for item in obj)
    return obj


def atomic_write_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, lambda stream: stream.write(text.encode()))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda stream: stream.write(text.encode()))


def write_skipped(reason: str, *folders: Path | None) -> None:
    """A switched-off stage still creates its declared outputs: a marker saying why it did nothing."""
    for folder in folders:
        if folder is not None:
            atomic_write_json({"skipped": reason}, Path(folder) / "skipped.json")


def safe_torch_load(path: Path, what: str = "file") -> Any:
    """torch.load with weights_only=True; a missing, unreadable or code-carrying file is a UserError."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Our words, not torch's: its message goes on to suggest weights_only=False, i.e. running the code.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise UserError(f"{what} {path} is refused: it refers to {refused.group(1)}, code or an object that a "
                            f"{what} may not hold (only tensors, numbers, strings, lists and dicts are loaded)") from None
        raise UserError(f"{what} {path} cannot be loaded safely: it is not a file torch.save wrote, or it is "
                        "damaged") from None
    except Exception as error:  # truncated zip, ...
        raise UserError(f"{what} {path} cannot be loaded safely ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None


# A resume checkpoint is this header, then torch.save's bytes; the header holds the payload's sha256.
_CHECKPOINT_HEADER = b"cs-repro-checkpoint/2 sha256="
_DIGEST_LENGTH = 64


def save_checkpoint(state: Any, path: Path) -> None:
    """A resume checkpoint, written atomically with the digest of its payload (see load_checkpoint)."""
    import torch

    # Serialising comes before the file write, and a signal must not land inside torch.save either.
    with _interrupts_deferred():
        payload = io.BytesIO()
        torch.save(state, payload)
        data = payload.getbuffer()
        header = _CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n"

        def write(stream) -> None:
            stream.write(header)
            stream.write(data)

        _atomic_write(path, write)


def damaged_copy(path: Path) -> Path:
    """Where a checkpoint that failed its check is set aside: one per run, replaced by the next one."""
    path = Path(path)
    return path.with_suffix(path.suffix + ".damaged")


def _checkpoint_payload(data: bytes) -> tuple[bytes | None, str]:
    """(payload, "") when the digest matches, else (None, what is wrong)."""
    start = len(_CHECKPOINT_HEADER) + _DIGEST_LENGTH + 1
    if not data.startswith(_CHECKPOINT_HEADER) or data[start - 1:start] != b"\n":
        return None, "it carries no digest (not written by this version's checkpoint writer)"
    recorded = data[len(_CHECKPOINT_HEADER):start - 1].decode("ascii", "replace")
    payload = data[start:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != recorded:
        return None, f"its bytes changed after it was written (sha256 {actual[:12]}..., recorded {recorded[:12]}...)"
    return payload, ""


def read_checkpoint(path: Path) -> Any:
    """A resume checkpoint's state, its digest checked, nothing moved; ValueError says what is wrong."""
    import torch

    payload, problem = _checkpoint_payload(Path(path).read_bytes())
    if payload is None:
        raise ValueError(problem)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"it does not load ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None


def load_checkpoint(path: Path) -> Any | None:
    """A resume checkpoint, or None when there is none. One whose digest does not match, or that does not
    load, is set aside (`damaged_copy`) with one log line, and the run starts over: never trusted."""
    path = Path(path)
    for leftover in remove_stale_temporaries(path) if is_writer() else ():
        log.info("removed %s, left by a write that was killed", leftover)
    if not path.exists():
        return None
    try:
        return read_checkpoint(path)
    except ValueError as error:
        if not is_writer():  # rank 0 read the same bytes: it sets the file aside and says so
            return None
        aside = damaged_copy(path)
        os.replace(path, aside)
        log.warning("checkpoint %s is damaged: %s; moved to %s and starting over", path, error, aside)
        return None


def read_json(path: Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{what} {path} is not valid JSON ({error})") from None
