"""How a stage process ends: on SIGTERM like on Ctrl-C, and never after the `dvc` that started it.

* SIGTERM (`kill`, `docker stop`, SLURM's time limit, the watchdog below) raises KeyboardInterrupt in the
  main thread, so a stage stops the way Ctrl-C stops it: the epoch in progress is dropped, every finished
  epoch is in the checkpoint (unless writes are spaced out: train.CHECKPOINT_BUDGET), atomic writes remove
  their temporary file, exit status 130.
* Under DVC (the DVC_STAGE variable is set) a daemon thread watches the `dvc` process. DVC starts a stage
  through a shell, which may or may not exec the command (bash does, dash does not), so the watched
  process is the nearest ancestor that is not a shell. If it disappears (SIGTERM or kill -9 to `dvc`
  alone), the stage sends itself SIGTERM instead of training on and writing outputs no dvc.lock records.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger("cs_repro")

SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh", "busybox"})
POLL_SECONDS = 1.0


_stopping = False


def _terminate_as_interrupt(signum, frame) -> None:
    # Once: a second SIGTERM (repeated, or the watchdog's once dvc has gone) would otherwise raise inside the
    # interpreter's exit (an atexit callback), printing a traceback after the clean "interrupted" line.
    if not _stopping:
        stopping()
        raise KeyboardInterrupt


def stopping() -> None:
    """The stage is ending (interrupted, or its command returned): further SIGTERMs change nothing."""
    global _stopping
    _stopping = True


def stop_on_sigterm() -> None:
    global _stopping
    _stopping = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(command name, parent pid, start time) of a process from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1: text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return name, int(fields[1]), fields[19]  # state is fields[0]; ppid, ..., starttime (field 22 of stat)


def watched_ancestor(pid: int | None = None) -> tuple[int, str] | None:
    """(pid, start time) of the nearest ancestor of `pid` (default: this process) that is not a shell."""
    current = _stat(pid or os.getpid())
    while current is not None:
        parent = current[1]
        if parent <= 1:
            return None
        info = _stat(parent)
        if info is None:
            return None
        if info[0] not in SHELLS:
            return parent, info[2]
        current = info
    return None


def stop_with_parent() -> None:
    """Under DVC: stop (via SIGTERM to ourselves) when the dvc process that runs this stage exits."""
    stop_on_sigterm()
    if not os.environ.get("DVC_STAGE") or not Path("/proc/self/stat").exists():
        return
    ancestor = watched_ancestor()
    if ancestor is None:
        return
    pid, started = ancestor

    def watch() -> None:
        while not _stopping:
            info = _stat(pid)
            if info is None or info[2] != started:  # gone, or its pid reused by another process
                log.warning("the dvc process %d that runs this stage has exited: stopping (finished epochs are "
                            "kept in the checkpoint; `dvc repro` resumes them)", pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            threading.Event().wait(POLL_SECONDS)

    threading.Thread(target=watch, name="stop-with-dvc", daemon=True).start()
