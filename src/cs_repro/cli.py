"""`cs-repro`: the user's tools around the pipeline (params, profiles, registries, the README's results,
parallel runs, the CPU kernel). The pipeline's stages are `stages/*.py`, which dvc.yaml runs.

Every user-fixable problem (bad params, a missing file) ends with one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from cs_repro.errors import UserError
from cs_repro.stage_cli import DEFAULT_PARAMS, ParamsOption, load, user_errors

app = typer.Typer(
    help="Continuous Sparsification reproduction: the tools around the DVC pipeline (its stages are stages/*.py).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("cs_repro")


@app.command()
@user_errors
def readme(
    results: Annotated[Path, typer.Option(help="metrics/results.json from `evaluate`")] = Path("metrics/results.json"),
    path: Annotated[Path, typer.Option("--readme", help="README to update in place")] = Path("README.md"),
) -> None:
    """Rewrite the README's results block (between its results markers) from the committed metrics."""
    from cs_repro.io import atomic_write_text
    from cs_repro.report.markdown import replace_results_block, results_block
    from cs_repro.report.rows import load_results

    if not results.exists():
        raise UserError(f"{results} does not exist: run `dvc repro evaluate` first")
    rows, meta = load_results(results)
    atomic_write_text(replace_results_block(path.read_text(), results_block(rows, meta)), path)
    log.info("results block of %s rewritten from %s", path, results)


@app.command()
@user_errors
def preflight(
    params: ParamsOption = DEFAULT_PARAMS,
    container: Annotated[bool, typer.Option(help="word the advice for `docker run` (the image's entry point)")] = False,
) -> None:
    """Check what would stop the run after it started, before any DVC work: a GPU profile with no GPU visible,
    a dataset neither prepared, nor found, nor downloadable from here, too little shared memory for runs on
    several processes or streamed from disk. One line and exit 2 on the first."""
    from cs_repro_orchestration.preflight import first_problem

    from cs_repro.device import choose_device, hardware_name

    loaded = load(params)
    problem = first_problem(loaded, container)
    if problem:
        raise UserError(problem)
    device = choose_device()
    where = hardware_name(device) if device.type == "cuda" else "the CPU"
    typer.echo(f"{params}: the {loaded.profile} profile is ready to run on {where} (its data found)", err=True)


@app.command("params")
@user_errors
def show_params(
    check: Annotated[Optional[Path], typer.Option(help="validate this params file")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """List every parameter: its value in the params file (when there is one), the code's default, and its
    meaning; `*` marks a value that differs from the default.  With --check, validate a params file."""
    from cs_repro.params import describe

    if check is not None:
        p = load(check)
        typer.echo(f"{check}: valid ({p.profile} profile; networks: {len(p.sweep.networks)}, "
                   f"seeds: {len(p.sweep.seeds)}, s0 values: {len(p.sweep.s0)})")
        warning = p.cpu.oversubscribed()
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        return
    current = load(params) if params.is_file() else None
    rows = describe(current=current)
    key_width = max(len(key) for key, *_ in rows)
    if current is None:
        typer.echo(f"({params} not found: defaults only)")
        for key, default, _, help_text in rows:
            typer.echo(f"{key:{key_width}s}  {default:>14s}  {help_text}")
        return
    typer.echo(f"{'key':{key_width}s}  {'value in ' + str(params):>22s}  {'default':>14s}  meaning")
    for key, default, value, help_text in rows:
        mark = "*" if value != default else " "
        typer.echo(f"{key:{key_width}s} {mark}{value:>22s}  {default:>14s}  {help_text}")


@app.command("suggest-settings")
@user_errors
def suggest_settings(
    results: Annotated[Path, typer.Option(help="metrics/results.json from `evaluate`")] = Path("metrics/results.json"),
) -> None:
    """The settings that would fill the gaps in this run's grids (CS's s0 values, IMP's levels, L0's penalties,
    pruning targets) and one `dvc exp run -S` line that adds them all: REPORT.md's Coverage section."""
    from cs_repro.report.aggregate import Aggregates
    from cs_repro.report.coverage import MAX_GAP, every_hole, exp_run_commands
    from cs_repro.report.rows import load_results, pretty_network

    if not results.exists():
        raise UserError(f"{results} does not exist: run `dvc repro evaluate` first")
    rows, _ = load_results(results)
    agg = Aggregates(rows)
    found = every_hole(agg)
    if not found:
        typer.echo(f"no gaps: every method's neighbouring tickets are within {MAX_GAP:g}x in remaining weights, "
                   "and none still matches at its sparsest setting")
        return
    for hole, suggestion in found:
        typer.echo(f"{pretty_network(hole.network)}: {hole.describe()}; {suggestion.text()}")
    for command in exp_run_commands(agg, found):
        typer.echo(command)


@app.command("use-profile")
@user_errors
def use_profile(
    name: Annotated[str, typer.Argument(help="profile: quick, extended, paper, frankle or imagenet (conf/profile/<name>.yaml; "
                                                          "the README's Profiles table says what each runs)")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Hydra overrides, e.g. lambda=1e-9 seeds=[0]")] = None,
    out: Annotated[Path, typer.Option(help="params file to write")] = Path("params.yaml"),
) -> None:
    """Write params.yaml from a profile (what `dvc exp run -S profile=NAME` does), then validate it."""
    from cs_repro.params import params_from_dict
    from cs_repro.profiles import compose_profile, write_params

    composed = compose_profile(name, overrides or [])
    params_from_dict(composed)
    write_params(composed, out)
    log.info("%s now holds the %s profile; run `dvc repro` (or `cs-repro parallel`)", out, name)


@app.command("list")
@user_errors
def list_registered() -> None:
    """The registered models, datasets and methods."""
    from cs_repro.data import DATASETS
    from cs_repro.methods import METHODS
    from cs_repro.models import MODELS

    typer.echo("models:   " + ", ".join(MODELS.names()))
    typer.echo("datasets: " + ", ".join(DATASETS.names()))
    typer.echo("methods:  " + ", ".join(METHODS.names()))


@app.command("build-kernel")
@user_errors
def build_kernel() -> None:
    """Build (or find) the fused CPU soft-mask kernel now; otherwise it is built on first use (~12 s)."""
    from cs_repro import kernels

    if kernels.kernel_mode() == "aten":
        typer.echo(f"{kernels.KERNEL_ENV}=aten: the kernel is switched off, soft masks use ATen ops")
        return
    os.environ[kernels.KERNEL_ENV] = "fused"  # fail loudly here rather than fall back
    kernels.fused_soft_mask_available()
    typer.echo(f"fused soft-mask kernel ready: {kernels.build_directory()}")


from cs_repro_orchestration.parallel import parallel_command  # noqa: E402  (docs/parallel.md)

app.command("parallel")(user_errors(parallel_command))

if __name__ == "__main__":
    app()
