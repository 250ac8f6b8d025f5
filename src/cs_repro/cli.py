"""`cs-repro`: the command-line app the DVC stages call (one command per stage) plus helpers.

Every user-fixable problem (bad params, missing data, a damaged ticket) ends with one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from cs_repro.checkpoints import CHECKPOINT_DIR, stage_scope
from cs_repro.errors import UserError
from cs_repro.stage_process import stop_with_parent

app = typer.Typer(
    help="Continuous Sparsification reproduction: ticket search (CS, IMP), retraining, evaluation, figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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
DEFAULT_CHECKPOINTS = CHECKPOINT_DIR


def _setup_logging(quiet: bool = False) -> None:
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
        _setup_logging()
        stop_with_parent()
        try:
            with stage_scope():
                return command(*args, **kwargs)
        except UserError as error:  # TrainingDiverged is one too
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: progress up to the last finished epoch is kept; run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _params(path: Path):
    from cs_repro.params import load_params

    return load_params(path)


def _device(requested: str | None):
    from cs_repro.device import choose_device, hardware_name

    device = choose_device(requested)
    if device.type == "cpu":
        log.info("running on the CPU (%s)", hardware_name(device))
    else:
        log.info("running on %s", hardware_name(device))
    return device


def _write_skipped(reason: str, *folders: Path | None) -> None:
    """A switched-off stage still creates its declared outputs: a marker saying why it did nothing."""
    from cs_repro.io import atomic_write_json

    for folder in folders:
        if folder is not None:
            atomic_write_json({"skipped": reason}, Path(folder) / "skipped.json")


@app.command()
@user_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="dataset registry name, e.g. fashion_mnist or cifar10")],
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Optional[Path], typer.Option(help="output file (default data/prepared/<dataset>.pt)")] = None,
) -> None:
    """Read a raw dataset (checksums verified) into one tensor file under data/prepared/."""
    from cs_repro.run import prepare_dataset, prepared_path

    p = _params(params)
    summary = prepare_dataset(p, dataset, out or prepared_path(dataset))
    log.info("prepared %s: %d training and %d test images", dataset, summary["train"], summary["test"])


@app.command("cs-search")
@user_errors
def cs_search(
    network: Annotated[str, typer.Option(help="key of `networks` in params.yaml")],
    s0: Annotated[float, typer.Option(help="initial mask logit (lower -> sparser ticket)")],
    seed: Annotated[int, typer.Option(help="seed: init, split, data order, augmentation")],
    out: Annotated[Path, typer.Option(help="output directory (ticket.pt, metrics.json, timing.json)")],
    params: ParamsOption = Path("params.yaml"),
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Continuous Sparsification ticket search for one (network, s0, seed)."""
    from cs_repro.methods.cs import run_cs_search

    p = _params(params)
    run_cs_search(p, network, s0, seed, out, _device(device), checkpoint_dir, timing)


@app.command()
@user_errors
def imp(
    network: Annotated[str, typer.Option(help="key of `networks` in params.yaml")],
    seed: Annotated[int, typer.Option(help="seed: init, split, data order, augmentation")],
    out: Annotated[Path, typer.Option(help="output directory (tickets/, metrics.json, timing.json)")],
    continue_search: Annotated[bool, typer.Option("--continue", help="IMP-C: do not rewind between levels")] = False,
    params: ParamsOption = Path("params.yaml"),
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Iterative magnitude pruning with rewinding (IMP), or IMP-C with --continue. Level l's training is
    the retraining of ticket l."""
    from cs_repro.methods.imp import run_imp

    p = _params(params)
    if continue_search and p.imp.continue_levels == 0:
        _write_skipped("imp.continue_levels is 0", out, timing)
        log.info("IMP-C skipped: imp.continue_levels is 0")
        return
    run_imp(p, network, seed, out, _device(device), continue_search, checkpoint_dir, timing)


@app.command()
@user_errors
def retrain(
    tickets: Annotated[Path, typer.Option(help="a ticket file, or a directory of ticket files (*.pt)")],
    out: Annotated[Path, typer.Option(help="output directory: <variant>/ (one ticket) or <ticket>/<variant>/")],
    variants: Annotated[str, typer.Option(help="comma list of rewind, reinit, random, rewind_released_scale; 'controls' = rewind plus the controls params.yaml enables; 'control-only' = the enabled controls alone")] = "controls",
    params: ParamsOption = Path("params.yaml"),
    device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
    timing: TimingOption = None,
) -> None:
    """Retrain tickets, whatever method found them: from their rewind point ('rewind'), from fresh weights
    ('reinit' control), as a random mask with the same layer-wise counts ('random' control, when
    random_control.enabled), or with the released code's mask scale ('rewind_released_scale', CS tickets)."""
    from cs_repro.methods.retrain import RETRAIN_VARIANTS, retrain_ticket
    from cs_repro.tickets import load_ticket

    p = _params(params)
    controls = ["reinit"] if p.controls.reinit else []
    if p.controls.released_scale:
        controls.append("rewind_released_scale")
    chosen = {"controls": ["rewind", *controls], "control-only": controls}.get(variants, [v for v in variants.split(",") if v])
    for variant in chosen:
        if variant not in RETRAIN_VARIANTS:
            raise UserError(f"--variants: {variant!r} is not allowed; use {', '.join(RETRAIN_VARIANTS)}, "
                            "controls or control-only")
    if not tickets.exists() and (tickets.parent / "skipped.json").exists():
        # the search was switched off (e.g. imp.continue_levels: 0)
        _write_skipped(f"no tickets: {tickets.parent} was skipped", out, timing)
        return
    if not tickets.exists():
        raise UserError(f"{tickets} does not exist: run the search that writes it first")
    files = sorted(tickets.glob("*.pt")) if tickets.is_dir() else [tickets]
    if not files:
        raise UserError(f"no ticket files (*.pt) in {tickets}")
    runs = []
    for path in files:
        metadata = load_ticket(path).metadata
        if tickets.is_dir() and metadata.get("remaining_weights", 0.0) >= 1.0:
            continue  # the dense 'ticket' (IMP level 0) has nothing to control for
        # the released scale is CS's; other tickets (IMP) have no s0
        wanted = [v for v in chosen if not (v == "rewind_released_scale" and variants in ("controls", "control-only")
                                            and "s0" not in metadata)]
        if wanted:
            runs.append((path, wanted, Path(path.stem) if tickets.is_dir() else Path()))
    if not runs:  # a stage's outputs must exist even when there is nothing to run
        _write_skipped("no control applies (controls.reinit, controls.released_scale)", out, timing)
        return
    dev = _device(device)
    ran = [retrain_ticket(p, path, wanted, out / relative, dev, checkpoint_dir, timing / relative if timing else None)
           for path, wanted, relative in runs]
    if not any(ran):  # retrain_ticket leaves the random control out while random_control.enabled is false
        _write_skipped("no control applies (random_control.enabled is false)", out, timing)


@app.command()
@user_errors
def evaluate(
    runs: Annotated[Path, typer.Option(help="the runs/ directory written by the search and retrain stages")] = Path("runs"),
    timings: Annotated[Path, typer.Option(help="the timings/ directory (mirrors runs/)")] = Path("timings"),
    out: Annotated[Path, typer.Option(help="metrics directory")] = Path("metrics"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Collect every run into metrics/results.json, DVC metrics (summary.json) and plot data."""
    from cs_repro.evaluation import evaluate_runs

    evaluate_runs(_params(params), runs, out, timings)


@app.command()
@user_errors
def report(
    results: Annotated[Path, typer.Option(help="metrics/results.json from `evaluate`")] = Path("metrics/results.json"),
    out: Annotated[Path, typer.Option(help="figures directory")] = Path("figures"),
    show_optional: Annotated[bool, typer.Option(help="also draw IMP-C and the controls")] = False,
) -> None:
    """Figures (PNG, PDF), tables (Markdown, CSV, LaTeX) and figures/REPORT.md, from the metrics alone."""
    from cs_repro.report import generate

    if not results.exists():
        raise UserError(f"{results} does not exist: run `dvc repro evaluate` first")
    generate(results, out, show_optional=show_optional)
    log.info("figures, tables and REPORT.md written to %s", out)


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


@app.command("params")
@user_errors
def show_params(
    check: Annotated[Optional[Path], typer.Option(help="validate this params file")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """List every parameter: its value in the params file (when there is one), the code's default, and its
    meaning; `*` marks a value that differs from the default.  With --check, validate a params file."""
    from cs_repro.params import describe

    if check is not None:
        p = _params(check)
        typer.echo(f"{check}: valid ({p.profile} profile, {len(p.sweep.networks)} networks, "
                   f"{len(p.sweep.seeds)} seeds, {len(p.sweep.s0)} s0 values)")
        return
    current = _params(params) if params.is_file() else None
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


@app.command("use-profile")
@user_errors
def use_profile(
    name: Annotated[str, typer.Argument(help="profile: quick or paper (conf/profile/<name>.yaml)")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Hydra overrides, e.g. lambda=1e-9 seeds=[0]")] = None,
    out: Annotated[Path, typer.Option(help="params file to write")] = Path("params.yaml"),
) -> None:
    """Write params.yaml from a profile (what `dvc exp run -S profile=NAME` does), then validate it."""
    from cs_repro.params import params_from_dict
    from cs_repro.profiles import compose_profile, write_params

    composed = compose_profile(name, overrides or [])
    params_from_dict(composed)
    write_params(composed, out)
    log.info("%s now holds the %s profile; run `dvc repro`", out, name)


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

# --- the reviewers' baselines and ablations (cs_repro.methods): `cs-repro baseline <command>` ---------------

baseline_app = typer.Typer(help="Baselines and ablations: L0, GMP, magnitude pruning, IMP's random control, CS ablations "
                                "(their tickets are retrained by `cs-repro retrain`).",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
NetworkOption = Annotated[str, typer.Option(help="key of `networks` in params.yaml")]
SeedOption = Annotated[int, typer.Option(help="seed: init, split, data order, noise")]
OutOption = Annotated[Path, typer.Option(help="output directory")]


@baseline_app.command("l0-search")
@user_errors
def baseline_l0_search(network: NetworkOption, penalty: Annotated[float, typer.Option(help="L0 lambda")],
                       seed: SeedOption, out: OutOption, params: ParamsOption = Path("params.yaml"),
                       device: DeviceOption = None, checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
                       timing: TimingOption = None) -> None:
    """L0 (hard-concrete gates) training: ticket.pt and the gated network's result row."""
    from cs_repro.methods.l0 import run_l0_search

    run_l0_search(_params(params), network, penalty, seed, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("imp-random-control")
@user_errors
def baseline_imp_random_control(
    tickets: Annotated[Path, typer.Option(help="an IMP search's tickets/ directory (level_XX.pt)")], out: OutOption,
    params: ParamsOption = Path("params.yaml"), device: DeviceOption = None,
    checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS, timing: TimingOption = None,
) -> None:
    """Random masks with each IMP level ticket's layer-wise counts, retrained from its rewind point
    (out/level_XX/), for the levels random_control.imp_levels names ([] = every pruned level)."""
    from cs_repro.methods.retrain import run_level_random_controls

    run_level_random_controls(_params(params), tickets, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("gmp")
@user_errors
def baseline_gmp(network: NetworkOption, sparsity: Annotated[float, typer.Option(help="target sparsity s_f")],
                 seed: SeedOption, out: OutOption, params: ParamsOption = Path("params.yaml"), device: DeviceOption = None,
                 checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS, timing: TimingOption = None) -> None:
    """Gradual magnitude pruning (Zhu & Gupta) to one target sparsity."""
    from cs_repro.methods.gmp import run_gmp

    run_gmp(_params(params), network, sparsity, seed, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("gmp-cs-layers")
@user_errors
def baseline_gmp_cs_layers(cs_ticket: Annotated[Path, typer.Option(help="a CS ticket.pt")], out: OutOption,
                           params: ParamsOption = Path("params.yaml"), device: DeviceOption = None,
                           checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS, timing: TimingOption = None) -> None:
    """Ablation: GMP to a CS ticket's layer-wise sparsities (out/layerwise) and globally to its overall one (out/global)."""
    from cs_repro.methods.gmp import run_gmp_cs_layers

    run_gmp_cs_layers(_params(params), cs_ticket, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("magnitude-dense")
@user_errors
def baseline_magnitude_dense(network: NetworkOption, seed: SeedOption, out: OutOption,
                             params: ParamsOption = Path("params.yaml"), device: DeviceOption = None,
                             checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS, timing: TimingOption = None) -> None:
    """Train the dense network that one-shot magnitude pruning starts from (dense.pt: final + rewind weights)."""
    from cs_repro.methods.magnitude import run_magnitude_dense

    run_magnitude_dense(_params(params), network, seed, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("magnitude")
@user_errors
def baseline_magnitude(network: NetworkOption, sparsity: Annotated[float, typer.Option(help="target sparsity")],
                       seed: SeedOption, dense: Annotated[Path, typer.Option(help="magnitude-dense output directory")],
                       out: OutOption, params: ParamsOption = Path("params.yaml"), device: DeviceOption = None,
                       checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS, timing: TimingOption = None) -> None:
    """One-shot global magnitude pruning: rewind ticket (+ random control) and fine-tuned pruned network."""
    from cs_repro.methods.magnitude import run_magnitude

    run_magnitude(_params(params), network, sparsity, seed, dense, out, _device(device), checkpoint_dir, timing)


@baseline_app.command("cs-ablation")
@user_errors
def baseline_cs_ablation(name: Annotated[str, typer.Argument(help="cs_beta1 or cs_released_clamp")],
                         network: NetworkOption, s0: Annotated[float, typer.Option(help="initial mask logit")],
                         seed: SeedOption, out: OutOption, params: ParamsOption = Path("params.yaml"),
                         device: DeviceOption = None, checkpoint_dir: CheckpointOption = DEFAULT_CHECKPOINTS,
                         timing: TimingOption = None) -> None:
    """CS ablation search (out/search) and its ticket's rewind retraining (out/retrain/rewind)."""
    from cs_repro.methods.cs_ablations import run_cs_ablation

    run_cs_ablation(_params(params), name, network, s0, seed, out, _device(device), checkpoint_dir, timing)


if __name__ == "__main__":
    app()
