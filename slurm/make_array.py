#!/usr/bin/env python
"""Write (and optionally submit) SLURM job arrays that reproduce this workspace's DVC pipeline.

    python slurm/make_array.py --shared-cache /scratch/$USER/dvc-cache [--submit] [--sbatch=--partition=gpu ...]

Run it in the main workspace (a git repository on a file system the compute nodes see). It

1. points this workspace's DVC cache at the shared cache (`dvc cache dir --local`, `cache.shared group`);
2. splits the out-of-date stages (all of them with --all) into waves: the head stages (prepare@*), then the
   fan-out stages by dependency depth (searches, then retrain/controls);
3. writes into --out (default .cache/slurm): per wave a stage list `waveK.txt` and an array script
   `waveK.sbatch` (one stage per task, body `slurm/job.sh waveK.txt $SLURM_ARRAY_TASK_ID`, `--gres=gpu:N`
   when the cluster has GPUs, N = the processes of the largest run; a run larger than --gpus-per-node gets
   `--nodes=K` and job.sh started on each node by srun, one run across them), `collect.sbatch`
   (`slurm/collect.sh`: `dvc repro` here, which restores every stage from the shared run-cache and runs
   evaluate/report) and `submit.sh`, which chains them: wave 1
   `afterok` on the head wave; a wave whose task i needs only task i of the wave before
   (cs_retrain@X <- cs_search@X) `aftercorr`, any other `afterok`; the collector `afterany` on all waves.
4. with --submit: checks every script with `sbatch --test-only` first (nothing is submitted if one is
   rejected), then runs submit.sh, which cancels what it had submitted if a later sbatch fails.

Stages whose task finished at this commit (a marker in --out/done/) are left out of the plan, so running
the same command again after a failed or cancelled task resubmits exactly what is missing, with its
dependencies; the collector names that command when it finds a stage unfinished.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from cs_repro.errors import UserError
from cs_repro_orchestration.parallel import (Wave, changed_stages, dvc_executable, out_of_date, read_pipeline,
                                             read_params_file, run_processes, slurm_waves, split)

HERE = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _ranges(indices: list[int]) -> str:
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def _sbatch(name: str, body: str, out: Path, extra: list[str], array: str | None = None,
            gres: str | None = None, nodes: int = 1) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}",
             f"#SBATCH --output={out / 'logs'}/{name}-%A_%a.log" if array else f"#SBATCH --output={out / 'logs'}/{name}-%j.log"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    if gres:
        lines.append(f"#SBATCH --gres={gres}")
    if nodes > 1:
        lines += [f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1"]
    lines += [f"#SBATCH {option}" for option in extra]
    return "\n".join([*lines, "set -euo pipefail", body, ""])


def finished_stages(out: Path, commit: str) -> set[str]:
    """Stages whose task finished at `commit` (job.sh writes the commit into done/<stage>); markers of other
    commits are removed, since their outputs belong to other code or params."""
    done = set()
    for marker in sorted((out / "done").glob("*")) if (out / "done").is_dir() else []:
        recorded = marker.read_text().split()
        if recorded[:1] == [commit] and len(recorded) > 1:
            done.add(recorded[1])
        else:
            marker.unlink()
    return done


def write_arrays(workspace: Path, shared_cache: Path, out: Path, waves: list[Wave], extra: list[str],
                 gres: str | None, max_parallel: int | None, venv: Path | None, commit: str,
                 resubmit: str, nodes: int = 1) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    for old in [*out.glob("wave*.txt"), *out.glob("wave*.sbatch")]:
        old.unlink()
    header = [f"# main={workspace}", f"# commit={commit}", f"# cache={shared_cache}", f"# resubmit={resubmit}"]
    if venv:
        header.append(f"# venv={venv}")
    # Nothing half-submitted: if an sbatch fails, the jobs this script already submitted are cancelled.
    submit = ["#!/usr/bin/env bash", "# Submits the waves and the collector (written by slurm/make_array.py).",
              "set -euo pipefail", 'cd "$(dirname "$0")"', "ids=()",
              'cancel() { if [ ${#ids[@]} -gt 0 ]; then scancel "${ids[@]}" || true; fi; '
              'echo "submission failed; cancelled: ${ids[*]:-nothing}" >&2; exit 1; }',
              'submit() { local id; id=$(sbatch --parsable "$@") || cancel; ids+=("${id%%;*}"); }']
    ids = []
    for k, wave in enumerate(waves):
        listing = out / f"wave{k}.txt"
        listing.write_text("\n".join([*header, *(s or "-" for s in wave.stages)]) + "\n")
        array = _ranges(wave.indices) + (f"%{max_parallel}" if max_parallel else "")
        job = f'bash {HERE / "job.sh"} {listing} "$SLURM_ARRAY_TASK_ID"'
        # prepare needs no GPU; a run across nodes: job.sh on each node (node 0 runs the stage, the rest join it)
        task_nodes = 1 if wave.head else nodes
        body = f"exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 {job}" if task_nodes > 1 else f"exec {job}"
        (out / f"wave{k}.sbatch").write_text(_sbatch(f"cs-repro-wave{k}", body, out, extra, array,
                                                     None if wave.head else gres, task_nodes))
        dependency = f"--dependency={wave.dependency}:${{w{k - 1}}} --kill-on-invalid-dep=yes " if k else ""
        submit.append(f"submit {dependency}wave{k}.sbatch; w{k}=${{ids[-1]}}")
        ids.append(f"${{w{k}}}")
    (out / "collect.sbatch").write_text(_sbatch("cs-repro-collect", f"exec bash {HERE / 'collect.sh'} {out}", out, extra))
    submit.append(f"submit --dependency=afterany:{':'.join(ids)} collect.sbatch; c=${{ids[-1]}}")
    submit.append(f'echo "submitted waves {" ".join(ids)}, collector $c; logs in {out / "logs"}"')
    (out / "submit.sh").write_text("\n".join(submit) + "\n")
    (out / "submit.sh").chmod(0o755)
    return out / "submit.sh"


def cluster_has_gpus() -> bool | None:
    """Whether any node of the cluster offers a GPU (from `sinfo`'s GRES column); None without sinfo."""
    if shutil.which("sinfo") is None:
        return None
    result = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"sinfo could not ask the cluster ({' '.join(result.stderr.split())[:200]})")
        return None
    return any("gpu" in line for line in result.stdout.split())


def nodes_per_task(processes: list[int], gpus_per_node: int) -> int:
    """Nodes one task asks for: 1 when the largest run fits a node, else the fewest nodes over which every run of
    more than one process splits evenly with at most `gpus_per_node` processes on each."""
    largest = max(processes, default=1)
    if largest <= gpus_per_node:
        return 1
    split_runs = [p for p in processes if p > 1]
    for nodes in range(-(-largest // gpus_per_node), largest + 1):
        if all(p % nodes == 0 for p in split_runs):
            return nodes
    raise UserError(f"runs of {sorted(set(split_runs))} processes cannot share one number of nodes")


def choose_gres(requested: str, per_task: int = 1, nodes: int = 1) -> str | None:
    """--gres, per node of a task: 'auto' asks the cluster (as many GPUs as a run's processes on a node,
    `networks.<net>.processes` / nodes, where there are GPUs; none on a CPU-only cluster; GPUs when sinfo is not
    there to ask), 'none' requests nothing, anything else is used as is."""
    if requested == "none":
        return None
    if requested != "auto":
        return requested
    gres = f"gpu:{per_task // nodes}"
    gpus = cluster_has_gpus()
    if gpus is None:
        print(f"no answer from sinfo: assuming GPUs, --gres={gres} per task (--gres none for a CPU-only cluster)")
        return gres
    print(f"the cluster has GPUs: --gres={gres} per task" if gpus else "the cluster has no GPUs: no --gres requested")
    return gres if gpus else None


def check_scripts(out: Path) -> None:
    """`sbatch --test-only` on every script before anything is submitted: a rejected option stops here."""
    if shutil.which("sbatch") is None:
        raise UserError("--submit needs sbatch on the PATH")
    for script in [*sorted(out.glob("wave*.sbatch")), out / "collect.sbatch"]:
        result = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, cwd=out)
        if result.returncode != 0:
            reason = " ".join(result.stderr.split()) or f"exit {result.returncode}"
            raise UserError(f"sbatch rejects {script.name}: {reason}; nothing was submitted "
                            "(fix the option, e.g. --gres none or --sbatch=..., and run again)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared-cache", type=Path, required=True, help="DVC cache directory every node can reach")
    parser.add_argument("--out", type=Path, default=Path(".cache/slurm"), help="where the lists and scripts go")
    parser.add_argument("--all", action="store_true", help="every stage, not only the out-of-date ones")
    parser.add_argument("--gres", default="auto",
                        help="per node of a fan-out task: auto (one GPU where the cluster has GPUs, none on a "
                             "CPU-only cluster), none, or a GRES such as gpu:1; auto asks for networks.<net>.processes "
                             "GPUs when a run trains on several (divided by the nodes of a run across nodes)")
    parser.add_argument("--gpus-per-node", type=int, default=8,
                        help="GPUs of one node; a run with more processes is spread over several nodes")
    parser.add_argument("--max-parallel", type=int, help="at most this many tasks of a wave at once (%%N)")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="extra #SBATCH line for every job, e.g. --sbatch=--time=12:00:00 (repeatable)")
    parser.add_argument("--allow-dirty", action="store_true", help="submit although pipeline files are uncommitted")
    parser.add_argument("--submit", action="store_true", help="run submit.sh (needs sbatch)")
    args = parser.parse_args(argv)
    try:
        workspace = Path.cwd().resolve()
        pipeline = read_pipeline(workspace)
        dirty = _git(["status", "--porcelain", "--", "dvc.yaml", "params.yaml", "conf", "src"], workspace).split("\n")
        dirty = [line for line in dirty if line.strip()]
        if dirty and not args.allow_dirty:
            raise UserError("the tasks clone the last commit, but these pipeline files differ from it; commit them "
                            "(or --allow-dirty): " + ", ".join(line[3:] for line in dirty))
        commit = _git(["rev-parse", "HEAD"], workspace).strip()
        out = (workspace / args.out).resolve()
        todo = set(pipeline.stages) if args.all else out_of_date(pipeline, changed_stages(workspace))
        todo &= set(split(pipeline).fanout) | set(split(pipeline).head)
        finished = finished_stages(out, commit)
        if not args.all:
            # The main workspace's `dvc status` cannot see the shared run-cache: what a task finished at this
            # commit is there already, so a re-submit plans only what is missing.
            todo -= finished
        if not todo:
            print("every fan-out stage is up to date or finished; `dvc repro` (or the collector) runs what is left")
            return 0
        processes = run_processes(read_params_file(workspace))
        largest = max(processes, default=1)
        nodes = nodes_per_task(processes, args.gpus_per_node) if args.gres != "none" else 1
        gres = choose_gres(args.gres, largest, nodes)
        if nodes > 1:
            print(f"runs of up to {largest} processes: {nodes} nodes per task, {largest // nodes} processes on "
                  f"each (torch's rendezvous on the task's first node)")
        waves = slurm_waves(pipeline, todo)
        shared = args.shared_cache.resolve()
        shared.mkdir(parents=True, exist_ok=True)
        subprocess.run([dvc_executable(), "cache", "dir", "--local", str(shared)], cwd=workspace, check=True)
        subprocess.run([dvc_executable(), "config", "--local", "cache.shared", "group"], cwd=workspace, check=True)
        venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else None
        resubmit = shlex.join([sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])]
                              + ([] if args.submit else ["--submit"]))
        submit = write_arrays(workspace, shared, out, waves, args.sbatch, gres, args.max_parallel, venv, commit,
                              f"cd {shlex.quote(str(workspace))} && {resubmit}", nodes)
        if args.submit:
            check_scripts(out)
    except (UserError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if finished and not args.all:
        print(f"{len(finished)} stage(s) already finished at this commit (not submitted again)")
    for k, wave in enumerate(waves):
        after = f"{wave.dependency} wave {k - 1}" if k else "first"
        print(f"wave {k}: {len(wave.indices)} tasks ({after}): {' '.join(s for s in wave.stages if s)}")
    print(f"written to {submit.parent}; submit with: bash {submit}")
    if args.submit:
        return subprocess.run(["bash", str(submit)]).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
