"""DVC's per-path locks (`.dvc/tmp/rwlock`) left behind by a `dvc` process that was killed.

Every `dvc repro` writes the paths it reads and writes into `.dvc/tmp/rwlock` under its process id and removes
them when it ends normally. A `dvc` killed by SIGTERM or SIGKILL (`docker stop`, SLURM's time limit, `kill`)
leaves its entries there. DVC later drops an entry whose process id no longer exists, but keeps one whose id a
new, unrelated process has taken, and then refuses the stage ("... is busy, it is being blocked by: (PID 49)").
In a container that is the rule, not bad luck: every container numbers its processes from 1 again, so the
resumed run's own `dvc` processes take the ids the stopped run's had.

An entry is still held when a process with its id runs with the arguments DVC recorded (DVC records
`" ".join(sys.argv)`), whatever the interpreter in front; every other entry is dropped, under DVC's own guard
of the file. DVC's own rwlock code does the reading and writing (pinned with dvc in pyproject.toml).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil

RWLOCK = Path(".dvc/tmp/rwlock")


def _still_held(holder: dict) -> bool:
    try:
        arguments = psutil.Process(int(holder["pid"])).cmdline()
    except (psutil.Error, ValueError, KeyError, TypeError):
        return False
    recorded = str(holder.get("cmd", ""))
    # argv[0] differs between how DVC saw itself and how the OS shows the process (`python .../dvc`,
    # `python -m dvc`): compare what follows it.
    _, _, recorded_args = recorded.partition(" ")
    return bool(recorded_args) and " ".join(arguments).endswith(" " + recorded_args)


def drop_dead_holders(workspace: Path) -> list[dict]:
    """Remove the rwlock entries of processes that no longer run; returns the holders removed (pid, cmd)."""
    tmp_dir = Path(workspace) / RWLOCK.parent
    if not (tmp_dir / RWLOCK.name).exists():
        return []
    # only now: importing DVC's rwlock costs ~0.25 s, on every start of `cs-repro parallel` and of the image
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    dropped: dict[str, dict] = {}
    with _edit_rwlock(str(tmp_dir), localfs, False) as lock:
        for path, holder in list(lock["write"].items()):
            if not _still_held(holder):
                dropped[json.dumps(holder, sort_keys=True)] = holder
                del lock["write"][path]
        for path, holders in list(lock["read"].items()):
            alive = [holder for holder in holders if _still_held(holder)]
            for holder in holders:
                if holder not in alive:
                    dropped[json.dumps(holder, sort_keys=True)] = holder
            if alive:
                lock["read"][path] = alive
            else:
                del lock["read"][path]
    return list(dropped.values())


def dropped_line(holder: dict) -> str:
    """What a run says about one holder it dropped."""
    return f"dvc: dropped the lock entries of a dvc that no longer runs (PID {holder['pid']}: {holder['cmd']})"


def main() -> None:
    """`python -m cs_repro_orchestration.dvc_locks` (the image's entry point, before any DVC command)."""
    for holder in drop_dead_holders(Path(".")):
        print(f"cs-repro: {dropped_line(holder)}", file=sys.stderr)


if __name__ == "__main__":
    main()
