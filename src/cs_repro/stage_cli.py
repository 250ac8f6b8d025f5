"""What every stage entry point under `stages/` shares: its options, its error handling, its device.

A stage is `python stages/<kind>.py ...` (dvc.yaml runs them). Every user-fixable problem (bad params,
missing data, a damaged ticket) ends with one line on stderr and exit status 2, never a traceback; Ctrl-C
and SIGTERM end with status 130 and keep every finished epoch. Light on purpose (no torch at import):
each stage imports only the modules of the work it does.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cs_repro.checkpoints import CHECKPOINT_DIR, stage_scope
from cs_repro.errors import UserError
from cs_repro.launch import announce_run, finish
from cs_repro.stage_process import stop_with_parent, stopping

log = logging.getLogger("cs_repro")

ParamsOption = Annotated[Path, typer.Option("--params", help="params file to read (DVC's params.yaml)")]
DeviceOption = Annotated[
    Optional[str], typer.Option("--device", help="auto | cpu | cuda (default: $CS_REPRO_DEVICE or auto)")
]
TimingOption = Annotated[
    Optional[Path], typer.Option("--timing", help="directory for timing.json (wall-clock, kept apart from the deterministic outputs; default: --out)")
]
CheckpointOption = Annotated[
    Path, typer.Option("--checkpoint-dir", help="where per-epoch resume checkpoints live (outside DVC outputs)")
]
NetworkOption = Annotated[str, typer.Option(help="key of `networks` in params.yaml")]
SeedOption = Annotated[int, typer.Option(help="seed: init, split, data order, augmentation, noise")]
OutOption = Annotated[Path, typer.Option(help="output directory")]
DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_CHECKPOINTS = CHECKPOINT_DIR


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def user_errors(command: Callable) -> Callable:
    """Turn UserError (and Ctrl-C) into one line and a non-zero exit. In a worker of a run on several
    processes the launching stage prints that line for the whole run (`launch_workers`)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        setup_logging()
        stop_with_parent()
        try:
            with stage_scope():
                return command(*args, **kwargs)
        except (typer.Exit, SystemExit):
            raise
        except BaseException as error:
            status = _worker_exit(error)
            if status is not None:
                stopping()
                raise typer.Exit(status) from None
            if isinstance(error, UserError):  # TrainingDiverged is one too
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(2) from None
            if isinstance(error, KeyboardInterrupt):
                stopping()
                typer.echo("interrupted: progress up to the last finished epoch is kept; run the same command to "
                           "resume", err=True)
                raise typer.Exit(130) from None
            raise
        finally:
            finish()  # the process group, if this process joined one

    return wrapper


def stage_app(command: Callable) -> typer.Typer:
    """A stage's one command as an app, with --help from its signature and docstring."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(user_errors(command))
    return app


def run_stage(command: Callable) -> None:
    """The `if __name__ == "__main__"` of a stage file."""
    try:
        stage_app(command)()
    finally:
        stopping()  # from here the process only exits


@dataclass(frozen=True)
class Training:
    """What a training stage's command gets besides its own options: the loaded params, the device (its
    CPU threads set), where resume checkpoints live and where timing.json goes."""

    params: Any
    device: Any
    checkpoint_dir: Path
    timing: Path | None


_TRAINING_OPTIONS = (
    inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_PARAMS, annotation=ParamsOption),
    inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DeviceOption),
    inspect.Parameter("checkpoint_dir", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_CHECKPOINTS,
                      annotation=CheckpointOption),
    inspect.Parameter("timing", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=TimingOption),
)


def training_stage(command: Callable) -> Callable:
    """A training stage's command from a function of its own options and `training: Training`: the stage
    gets --params, --device, --checkpoint-dir and --timing, and the function the loaded params and device."""
    own = [p for name, p in inspect.signature(command).parameters.items() if name != "training"]

    @functools.wraps(command)
    def stage(**options):
        params, device, checkpoint_dir, timing = (options.pop(name) for name in ("params", "device", "checkpoint_dir",
                                                                                  "timing"))
        if distributed_worker() and os.environ.get("RANK", "0") != "0":
            log.setLevel(logging.WARNING)  # one voice: rank 0 logs the run, the others only what goes wrong
        loaded = load(params)
        processes = stage_processes(loaded, options)
        if distributed_worker() and int(os.environ.get("WORLD_SIZE", "1")) != processes:
            raise UserError(f"this stage was started as {os.environ.get('WORLD_SIZE')} processes (torchrun?), but its "
                            f"network trains on {processes} (networks.<network>.processes): run the stage itself, "
                            f"which starts its own processes")
        if not distributed_worker():
            announce_run(processes)  # only on the first node of a SLURM job across nodes: the others join
            if processes > 1:
                return launch_workers(processes)
        device = training_device(loaded, device)
        if processes > 1:
            from cs_repro.launch import init_from_env

            device = init_from_env(device)
        command(**options, training=Training(loaded, device, checkpoint_dir, timing))

    stage.__signature__ = inspect.Signature([*own, *_TRAINING_OPTIONS])
    stage.__annotations__ = {p.name: p.annotation for p in stage.__signature__.parameters.values()}
    del stage.__wrapped__  # typer reads the signature above, not the command's
    return stage


def stage_processes(params, options: dict[str, Any]) -> int:
    """How many processes the stage's runs train on: `processes` of its network (from --network, or from the
    ticket it retrains)."""
    network = options.get("network")
    ticket = options.get("tickets") or options.get("cs_ticket")
    if network is None and ticket is not None:
        from cs_repro.io import safe_torch_load

        ticket = Path(ticket)
        files = sorted(ticket.glob("*.pt")) if ticket.is_dir() else [ticket] if ticket.exists() else []
        # the ticket's own checks come with the stage's work; here only its network is read
        network = (safe_torch_load(files[0], "ticket").get("metadata") or {}).get("network") if files else None
    if network is None or network not in params.networks:
        return 1
    return params.network(network).processes


def distributed_worker() -> bool:
    from cs_repro.launch import is_worker

    return is_worker()


#: Workers of a run on several processes leave their one-line error here for the launching stage to print.
ERROR_DIR_ENV = "CS_REPRO_WORKER_ERRORS"


def launch_workers(processes: int) -> None:
    """Start the stage's own command as `processes` workers of one run (torch's launcher) and wait; a failed
    worker becomes one line: its own error, or how it ended."""
    import tempfile

    from cs_repro.launch import WorkerFailed, run_workers

    with tempfile.TemporaryDirectory(prefix="cs-repro-workers-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        try:
            run_workers(processes, [sys.argv[0], *sys.argv[1:]])
        except WorkerFailed as failure:
            reported = sorted(Path(errors).glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
            message = reported[0].read_text().strip() if reported else str(failure)
            raise UserError(message) from None
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)


def _worker_exit(error: BaseException) -> int | None:
    """In a worker of a run on several processes: leave the error for the launching stage (which prints one
    line for the whole run) and return the exit status; None outside a worker or for a bug (a traceback)."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder:
        return None
    rank = os.environ.get("RANK", "0")
    if isinstance(error, UserError):
        Path(folder, f"rank-{rank}.txt").write_text(f"{error}\n")
        return 2
    if isinstance(error, KeyboardInterrupt):
        return 130
    if _lost_peer(error):  # another process died: the launcher names it
        return 1
    return None


def _lost_peer(error: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL", "Broken pipe"))


def run_training_stage(command: Callable) -> None:
    """The `if __name__ == "__main__"` of a training stage file."""
    run_stage(training_stage(command))


def load(path: Path):
    from cs_repro.params import load_params

    return load_params(path)


def training_device(params, requested: str | None):
    """The device a training stage runs on; on the CPU, with the thread count and denormal handling
    params.yaml's `cpu` section sets (both change the last bits of CPU results, and a stage's bytes must
    not depend on the machine it runs on)."""
    import torch

    from cs_repro.device import choose_device, hardware_name

    device = choose_device(requested)
    if device.type == "cpu":
        warning = params.cpu.oversubscribed()
        if warning:
            log.warning("%s", warning)
        if params.cpu.threads:
            torch.set_num_threads(params.cpu.threads)
        if params.cpu.flush_denormals and not torch.set_flush_denormal(True):
            log.warning("this CPU cannot flush denormals (cpu.flush_denormals): results differ from a CPU that can")
        log.info("running on the CPU (%s)", hardware_name(device))
    else:
        log.info("running on %s", hardware_name(device))
    return device
