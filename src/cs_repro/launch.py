"""How a stage starts one run as several processes (one per GPU) and how each joins the run.

A network with `processes: N > 1` (params.yaml) trains each run as N processes. The stage command is the
same as for one process: the stage sees it is not a worker yet and starts N copies of itself with torch's
own launcher (`torch.distributed.launcher`, what `torchrun` runs), rendezvous on this machine, or across
nodes when CS_REPRO_NNODES / CS_REPRO_RDZV_ENDPOINT say so (docs/parallel.md). Each copy joins the process
group (NCCL on GPUs, gloo on the CPU); only rank 0 writes (`io.is_writer`). How a run is started decides
nothing about what it computes: that is `cs_repro.distributed` and the training loop.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

log = logging.getLogger("cs_repro")

#: Set in every worker by `init_from_env`: the rank `io.is_writer` reads (torch is not imported there).
RANK_ENV = "CS_REPRO_RANK"
#: Runs across nodes (docs/parallel.md): the number of nodes, the rendezvous host:port and the run's id.
NNODES_ENV = "CS_REPRO_NNODES"
RDZV_ENV = "CS_REPRO_RDZV_ENDPOINT"
RUN_ID_ENV = "CS_REPRO_RUN_ID"
#: A file the first node's stage writes when it starts (which run, where): the other nodes wait for it.
RUN_MARKER_ENV = "CS_REPRO_RUN_MARKER"
#: How long a node waits at the rendezvous for the others (under SLURM, node 0 first restores the stage's inputs
#: with DVC, and only then starts the stage that hosts the rendezvous).
JOIN_TIMEOUT_S = 1800
#: How long a collective waits for the other processes before giving up (a dead rank ends the run).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def is_worker() -> bool:
    """Whether torch's launcher started this process (it sets these in every worker)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def init_from_env(device):
    """Join the run's process group (NCCL on CUDA, gloo on the CPU); the device this rank trains on."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    os.environ[RANK_ENV] = os.environ["RANK"]
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            from cs_repro.errors import UserError

            raise UserError(f"process {local_rank} of this node has no GPU: {torch.cuda.device_count()} visible, "
                            f"lower networks.<network>.processes or give the stage more GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return device  # the other ranks' log level: stage_cli.training_stage, before anything is logged


def finish() -> None:
    """Leave the process group, if this process joined one (never imports torch: commands without torch stay so)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- starting the processes ------------------------------------------------------------------------


class WorkerFailed(Exception):
    """A worker process of the run ended badly; the message is the one line the stage prints."""


def node_index(environ=os.environ) -> int:
    """This node's place among the run's nodes (SLURM_NODEID; 0 without SLURM)."""
    try:
        return int(environ.get("SLURM_NODEID", "0") or 0)
    except ValueError:
        return 0


def announce_run(processes: int, environ=os.environ) -> None:
    """On the first node of a job across nodes (slurm/job.sh sets RUN_MARKER_ENV on every node): say which run
    this stage starts, once DVC has restored its inputs, so that the other nodes join it (`join_run`)."""
    marker = environ.get(RUN_MARKER_ENV)
    if not marker or node_index(environ) != 0:
        return
    import json

    path = Path(marker)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"processes": processes, "cwd": os.getcwd(), "argv": [sys.executable, *sys.argv]}))
    temporary.replace(path)  # the other nodes never read half of it


def join_run(marker: Path, timeout_s: float, poll_s: float = 1.0) -> int:
    """On another node of the job: wait for the first node's stage (`announce_run`), then become the same
    command in the same folder, which starts this node's share of the run's processes. A one-process run, or
    none (processes 0: job.sh's word that the first node's stage did not start one), has nothing for this
    node: 0. Waiting longer than `timeout_s`: 2, with one line."""
    import json
    import time

    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            print(f"error: node {node_index()}: no stage started on the first node within {timeout_s:.0f} s "
                  f"(nothing at {marker}); its log says why", file=sys.stderr)
            return 2
        time.sleep(poll_s)
    run = json.loads(marker.read_text())
    if run["processes"] == 0:
        print(f"node {node_index()}: the first node started no run (its stage was restored from DVC's run-cache, "
              f"or failed first: see its log): nothing to do here")
        return 0
    if run["processes"] == 1:
        print(f"node {node_index()}: the stage trains one process, on the first node: nothing to do here")
        return 0
    print(f"node {node_index()}: joining the run of {run['processes']} processes in {run['cwd']}", flush=True)
    os.chdir(run["cwd"])
    os.execv(run["argv"][0], run["argv"])


def launch_config(processes: int, environ=os.environ):
    """torch's launcher settings: the run's `processes` on this node, or split evenly over CS_REPRO_NNODES nodes
    (the same stage command started on each, rendezvous at CS_REPRO_RDZV_ENDPOINT)."""
    from torch.distributed.launcher.api import LaunchConfig

    from cs_repro.errors import UserError

    try:
        nodes = int(environ.get(NNODES_ENV, "1") or 1)
    except ValueError:
        raise UserError(f"{NNODES_ENV}={environ.get(NNODES_ENV)!r} is not a number of nodes") from None
    endpoint = environ.get(RDZV_ENV, "")
    if nodes > 1 and not endpoint:
        raise UserError(f"{NNODES_ENV}={nodes} needs {RDZV_ENV}=host:port (a port on the first node)")
    if nodes < 1 or processes % nodes:
        raise UserError(f"the run's {processes} processes do not split evenly over {NNODES_ENV}={nodes} nodes")
    return LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=processes // nodes,
        run_id=environ.get(RUN_ID_ENV, "") or f"cs-repro-{os.getpid()}",
        rdzv_backend="c10d", rdzv_endpoint=endpoint or "localhost:0",
        rdzv_configs={"is_host": node_index(environ) == 0, "join_timeout": JOIN_TIMEOUT_S} if nodes > 1 else {},
        max_restarts=0,  # a failed run resumes from its checkpoint when the stage is run again
        monitor_interval=0.5, start_method="spawn",
    )


def _quiet_launcher() -> None:
    # The launcher logs every worker's start and, on a failure or a signal, a report of every rank: the stage says
    # one line. Its modules set their own loggers' levels, so each is silenced, not only the parent.
    import torch.distributed.elastic.agent.server.api  # noqa: F401  (creates the loggers it logs with)
    import torch.distributed.launcher.api  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run_workers(processes: int, argv: list[str]) -> None:
    """Run `python argv...` as `processes` workers of one run; WorkerFailed names the first that failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    _quiet_launcher()
    config = launch_config(processes)
    log.info("starting %d processes (torch.distributed, %s)", config.nproc_per_node,
             f"this node of {config.min_nodes}" if config.min_nodes > 1 else "this machine")
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as error:
        raise WorkerFailed(_failure_line(error, processes)) from None
    except SignalException:  # Ctrl-C, or SIGTERM from dvc, docker stop, SLURM: the launcher stopped the workers
        raise KeyboardInterrupt from None


def _failure_line(error, processes: int) -> str:
    def cause_first(item):
        # what ended the run rather than what the launcher's stopping did: a signal other than its SIGTERM, then a
        # worker's own error, then the earliest
        rank, failure = item
        code = failure.exitcode or 0
        return (0 if code < 0 and code != -signal.SIGTERM else 1 if code == 2 else 2, failure.timestamp or 0, rank)

    rank, first = min(error.failures.items(), key=cause_first)
    code = first.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    elif code == 2:
        how = "stopped on an error"
    elif code == 130:
        how = "was interrupted"
    else:
        how = f"exited with status {code}"
    return (f"process {rank} of the run's {processes} {how}; the others were stopped. Finished epochs are kept in "
            f"the checkpoint: run the same command to resume")


def main(argv: list[str] | None = None) -> int:
    """`python -m cs_repro.launch join MARKER [TIMEOUT_S]`: what slurm/job.sh runs on the job's other nodes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "join":
        print("usage: python -m cs_repro.launch join MARKER [TIMEOUT_S]", file=sys.stderr)
        return 2
    return join_run(Path(args[1]), float(args[2]) if len(args) == 3 else JOIN_TIMEOUT_S)


if __name__ == "__main__":
    raise SystemExit(main())
