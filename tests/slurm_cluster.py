"""A one-node SLURM cluster for tests: munged, slurmctld and slurmd started in a test's own folder.

Needs Debian's `slurm-wlm` and `munge`; as root with apt-get it installs them where missing, otherwise the
caller skips with the reason `ensure_slurm` returns. The daemons run as root with their own key, socket,
state, spool, logs and ports, so nothing of the machine's own configuration is used or touched; `stop`
ends them by PID. Clients find the cluster through SLURM_CONF (`Cluster.env`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def ensure_slurm() -> str | None:
    """None when the daemons are installed (installing them if root can); else why the test must skip."""
    if all(shutil.which(d) for d in DAEMONS):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "SLURM is not installed and cannot be (needs root and apt-get: apt-get install slurm-wlm munge)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            return f"installing SLURM failed: {' '.join(command)}: {result.stderr.strip()[-300:]}"
    return None if all(shutil.which(d) for d in DAEMONS) else "slurm-wlm installed but its daemons are missing"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
        return result

    def pids(self) -> list[int]:
        found = []
        for name in DAEMONS:
            pid_file = self.root / "run" / f"{name}.pid"
            if pid_file.exists() and pid_file.read_text().strip().isdigit():
                found.append(int(pid_file.read_text()))
        return found

    def idle_jobs(self, timeout: float) -> bool:
        """Wait until no job is pending or running; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-o", "%i").stdout.strip():
                return True
            time.sleep(1.0)
        return False

    def stop(self) -> None:
        self.run("scancel", "--full", "--user", "root", check=False)
        for pid in reversed(self.pids()):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in self.pids()):
            time.sleep(0.2)
        for pid in self.pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def start_cluster(root: Path, cpus: int = 2) -> Cluster:
    """Start munged, slurmctld and slurmd under `root`; returns once the node is idle."""
    for sub in ("state", "spool", "log", "run", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub).chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    munge_socket = root / "run" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=csrepro-test", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        # No cgroups in a test sandbox: plain process tracking, no task binding or accounting.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "ReturnToService=2", "MpiDefault=none",
        f"NodeName={host} CPUs={cpus} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
    ]))
    cluster = Cluster(root, conf)
    subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                    f"--pid-file={root / 'run' / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
                    f"--seed-file={root / 'munge' / 'munged.seed'}"], check=True, timeout=60)
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], check=True, timeout=60, env=cluster.env)
        time.sleep(1.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.split()
        if state and state[0] == "idle":
            return cluster
        time.sleep(0.5)
    logs = "".join((root / "log" / f"{d}.log").read_text()[-1000:] for d in ("slurmctld", "slurmd")
                   if (root / "log" / f"{d}.log").exists())
    cluster.stop()
    raise RuntimeError(f"the test SLURM node did not become idle:\n{logs}")
