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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cs_repro.checkpoints import CHECKPOINT_DIR, stage_scope
from cs_repro.errors import UserError
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
    """Turn UserError (and Ctrl-C) into one line and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        setup_logging()
        stop_with_parent()
        try:
            with stage_scope():
                return command(*args, **kwargs)
        except UserError as error:  # TrainingDiverged is one too
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            stopping()
            typer.echo("interrupted: progress up to the last finished epoch is kept; run the same command to resume", err=True)
            raise typer.Exit(130) from None

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
        loaded = load(params)
        command(**options, training=Training(loaded, training_device(loaded, device), checkpoint_dir, timing))

    stage.__signature__ = inspect.Signature([*own, *_TRAINING_OPTIONS])
    stage.__annotations__ = {p.name: p.annotation for p in stage.__signature__.parameters.values()}
    del stage.__wrapped__  # typer reads the signature above, not the command's
    return stage


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
