"""Run the pipeline's independent stages side by side: `cs-repro parallel -j N` on one machine, and the
stage graph that `slurm/make_array.py` turns into SLURM job arrays (docs/parallel.md).

No scheduling beyond a worker pool: every stage still runs through `dvc repro -s <stage>`, so DVC's locks,
dvc.lock and its run-cache do the bookkeeping. The stage graph comes from `dvc dag --dot` and is split in
three parts:

- head: stages with no upstream stage (`prepare@<dataset>`, `training_code`), brought up to date first with one `dvc repro`;
- fan-out: the other foreach/matrix stages (`name@item`) not downstream of an aggregation stage (cs_search,
  cs_retrain, imp_search, imp_controls, ...), run N at a time in dependency order;
- tail: the aggregation stages (a plain stage with an upstream stage, e.g. `evaluate`) and everything after
  them, run at the end by a plain `dvc repro`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterable, Optional

import typer
import yaml

from cs_repro.errors import UserError
from cs_repro_orchestration.dvc_locks import drop_dead_holders, dropped_line

LOG_DIR = Path(".cache/parallel-logs")
_EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"\s*;?\s*$')
_NODE = re.compile(r'^\s*"([^"]+)"\s*;?\s*$')


# --- the stage graph ----------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """Stages in `dvc dag` order and their direct upstream/downstream stages."""

    stages: list[str]
    upstream: dict[str, set[str]]
    downstream: dict[str, set[str]]

    @classmethod
    def from_dot(cls, text: str) -> "Pipeline":
        stages: list[str] = []
        upstream: dict[str, set[str]] = {}
        downstream: dict[str, set[str]] = {}

        def add(name: str) -> None:
            if name not in upstream:
                stages.append(name)
                upstream[name], downstream[name] = set(), set()

        for line in text.splitlines():
            if edge := _EDGE.match(line):
                source, target = edge.groups()
                add(source)
                add(target)
                upstream[target].add(source)
                downstream[source].add(target)
            elif node := _NODE.match(line):
                add(node.group(1))
        return cls(stages, upstream, downstream)

    def closure(self, start: Iterable[str], direction: str) -> set[str]:
        """Every stage reachable from `start` (exclusive) going 'up' or 'down'."""
        edges = self.upstream if direction == "up" else self.downstream
        seen: set[str] = set()
        todo = [s for name in start for s in edges[name]]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(edges[name])
        return seen

    def ordered(self, names: Iterable[str]) -> list[str]:
        chosen = set(names)
        return [s for s in self.stages if s in chosen]


@dataclass
class Parts:
    head: list[str]
    fanout: list[str]
    tail: list[str]


def split(pipeline: Pipeline) -> Parts:
    """head = no upstream stage; tail = plain (non-foreach/matrix) stages with an upstream stage, and all
    that follows them; fan-out = the rest (foreach/matrix stages fed by the head)."""
    aggregation = [s for s in pipeline.stages if "@" not in s and pipeline.upstream[s]]
    tail = set(aggregation) | pipeline.closure(aggregation, "down")
    head = [s for s in pipeline.stages if not pipeline.upstream[s] and s not in tail]
    fanout = [s for s in pipeline.stages if s not in tail and s not in head]
    return Parts(head, fanout, pipeline.ordered(tail))


def depths(pipeline: Pipeline, names: Iterable[str]) -> dict[str, int]:
    """Longest chain of upstream stages among `names` (0 = needs none of them)."""
    chosen = set(names)
    depth: dict[str, int] = {}
    for name in pipeline.stages:  # `dvc dag --dot` lists stages in topological order
        if name in chosen:
            depth[name] = 1 + max((depth[u] for u in pipeline.upstream[name] if u in chosen), default=-1)
    return depth


# --- talking to DVC -----------------------------------------------------------------------------------


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def dvc_executable() -> str:
    local = _bin_dir() / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def base_env() -> dict[str, str]:
    """The environment stage processes get: this venv's `dvc` and `cs-repro` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc(args: list[str], cwd: Path) -> str:
    result = subprocess.run([dvc_executable(), *args], cwd=cwd, env=base_env(), capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        # DVC's own "ERROR: ..." line says what went wrong; lines after it are advice
        said = next((line for line in message if line.startswith("ERROR:")), message[-1] if message else "")
        raise UserError(f"`dvc {' '.join(args)}` failed: {said or result.returncode}")
    return result.stdout


def require_workspace(cwd: Path) -> None:
    if not (cwd / "dvc.yaml").exists():
        raise UserError(f"no dvc.yaml in {cwd.resolve()}: run this in the project's workspace")


def read_pipeline(cwd: Path = Path(".")) -> Pipeline:
    require_workspace(cwd)
    pipeline = Pipeline.from_dot(_dvc(["dag", "--dot"], cwd))
    if not pipeline.stages:
        raise UserError("`dvc dag --dot` lists no stages")
    return pipeline


def changed_stages(cwd: Path = Path(".")) -> set[str]:
    """Stages `dvc status` reports as changed (their own deps, params, outputs or command)."""
    text = _dvc(["status", "--json"], cwd).strip()
    start = text.find("{")
    return set(json.loads(text[start:])) if start >= 0 else set()


def out_of_date(pipeline: Pipeline, changed: set[str]) -> set[str]:
    """Changed stages and everything downstream of them (whose inputs are about to change)."""
    changed = {s for s in changed if s in pipeline.upstream}
    return changed | pipeline.closure(changed, "down")


# --- one worker per GPU or per share of the cores ------------------------------------------------------


@dataclass
class Slot:
    index: int
    env: dict[str, str]
    prefix: list[str] = field(default_factory=list)  # taskset -c ...
    label: str = ""


def detect_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries; none when CS_REPRO_DEVICE=cpu."""
    if os.environ.get("CS_REPRO_DEVICE", "auto").strip() == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable torch/CUDA: CPU workers
        return []


def parse_gpus(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    for g in gpus:
        if not re.fullmatch(r"[0-9]+|(GPU|MIG)-[0-9A-Za-z-]+", g):
            raise UserError(f"--gpus: {g!r} is not a GPU index or UUID; use e.g. --gpus 0,1 or --gpus none")
    return gpus


def make_slots(jobs: int, gpus: list[str], cores: list[int], env: dict[str, str],
               taskset: str | None = None, threads: int | None = None, gpus_per_stage: int = 1) -> list[Slot]:
    """Worker i gets GPU gpus[i % len(gpus)] (round-robin), and its own cores//jobs CPU cores (threads and,
    with taskset, affinity), or one core shared round-robin when there are more workers than cores.
    `threads` overrides the thread count (CPU results depend on it in the last bits of some sums).
    `gpus_per_stage` > 1 (runs on several processes, `networks.<net>.processes`): the GPUs are cut into groups of
    that many and worker i gets group i % groups."""
    if jobs < 1:
        raise UserError(f"-j must be at least 1, got {jobs}")
    if gpus and gpus_per_stage > 1:
        groups = [",".join(gpus[j:j + gpus_per_stage]) for j in range(0, len(gpus) - gpus_per_stage + 1, gpus_per_stage)]
        if not groups:
            raise UserError(f"each run trains on {gpus_per_stage} GPUs (networks.<network>.processes in params.yaml) "
                            f"but {len(gpus)} are visible here: lower processes (and batch_size with it), or run "
                            f"where there are {gpus_per_stage}")
        gpus = groups
    cores = sorted(cores) or [0]
    per = max(1, len(cores) // jobs)
    slots = []
    for i in range(jobs):
        mine = cores[i * per:(i + 1) * per] if jobs <= len(cores) else [cores[i % len(cores)]]
        slot_env = dict(env)
        count = str(threads or len(mine))
        slot_env.update(OMP_NUM_THREADS=count, MKL_NUM_THREADS=count)
        label = f"cpus {_ranges(mine)}, {count} threads"
        if gpus:
            slot_env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            label = f"GPU {gpus[i % len(gpus)]}, {label}"
        else:
            slot_env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU worker must not grab a GPU another worker uses
        prefix = [taskset, "-c", ",".join(map(str, mine))] if taskset else []
        slots.append(Slot(i, slot_env, prefix, label))
    return slots


def _ranges(cores: list[int]) -> str:
    return f"{cores[0]}-{cores[-1]}" if len(cores) > 1 and cores[-1] - cores[0] == len(cores) - 1 else ",".join(map(str, cores))


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


# --- the run ------------------------------------------------------------------------------------------


def log_name(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._=+-]", "_", stage) + ".log"


@dataclass
class Outcome:
    stage: str
    returncode: int
    seconds: float
    log: Path
    ran: bool  # False: restored from DVC's run-cache (or already up to date)


class Runner:
    """Runs the fan-out stages, `jobs` at a time, each as `dvc --wait-for-lock repro -s <stage>`."""

    def __init__(self, pipeline: Pipeline, todo: set[str], slots: list[Slot], cwd: Path, log_dir: Path,
                 say: Callable[[str], None]):
        self.pipeline, self.slots, self.cwd, self.log_dir, self.say = pipeline, slots, cwd, log_dir, say
        self.todo = todo
        self.waiting = {s: pipeline.upstream[s] & todo for s in todo}
        order = pipeline.ordered(todo)
        # longest dependent chains first, then `dvc dag` order
        weight = {s: len(pipeline.closure([s], "down") & todo) for s in order}
        self.ready = deque(sorted((s for s in order if not self.waiting[s]), key=lambda s: -weight[s]))
        self.active = 0
        self.outcomes: dict[str, Outcome] = {}
        self.skipped: dict[str, str] = {}  # stage -> the failed stage it needs
        self.lock = threading.Condition()
        self.processes: dict[int, subprocess.Popen] = {}
        self.stopping = False
        self.started = time.monotonic()

    def run(self) -> None:
        threads = [threading.Thread(target=self._worker, args=(slot,), daemon=True) for slot in self.slots]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:
            with self.lock:
                self.stopping = True
                self.ready.clear()
                for process in self.processes.values():
                    if process.poll() is None:
                        process.terminate()  # dvc and the stage stop; the stage resumes from its checkpoint
            for thread in threads:
                thread.join(30)
            raise

    def _worker(self, slot: Slot) -> None:
        while True:
            with self.lock:
                while not self.ready and self.active and not self.stopping:
                    self.lock.wait()
                if not self.ready or self.stopping:
                    self.lock.notify_all()
                    return
                stage = self.ready.popleft()
                self.active += 1
            outcome = self._run_stage(stage, slot)
            with self.lock:
                self.active -= 1
                self.outcomes[stage] = outcome
                if outcome.returncode == 0:
                    for child in self.pipeline.ordered(self.pipeline.downstream[stage] & self.todo):
                        self.waiting[child].discard(stage)
                        if not self.waiting[child] and child not in self.skipped:
                            self.ready.append(child)
                else:
                    for child in self.pipeline.closure([stage], "down") & self.todo:
                        self.skipped.setdefault(child, stage)
                self.lock.notify_all()

    def _run_stage(self, stage: str, slot: Slot) -> Outcome:
        log = self.log_dir / log_name(stage)
        command = [*slot.prefix, dvc_executable(), "--wait-for-lock", "repro", "-s", stage]
        self.say(f"{self._clock()} start  {stage}  [worker {slot.index}: {slot.label}]")
        began = time.monotonic()
        with open(log, "w") as stream:
            stream.write(f"$ {' '.join(command)}\n# worker {slot.index}: {slot.label}\n")
            stream.flush()
            with self.lock:
                if self.stopping:
                    return Outcome(stage, 130, 0.0, log, False)
                process = subprocess.Popen(command, cwd=self.cwd, env=slot.env, stdout=stream,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                self.processes[slot.index] = process
            returncode = process.wait()
        seconds = time.monotonic() - began
        ran = "Running stage" in log.read_text(errors="replace")
        if returncode == 0:
            how = "ran" if ran else "restored from run-cache / up to date"
            self.say(f"{self._clock()} done   {stage}  in {seconds:.1f}s ({how})")
        else:
            self.say(f"{self._clock()} FAILED {stage}  after {seconds:.1f}s (exit {returncode}); log: {log}")
        return Outcome(stage, returncode, seconds, log, ran)

    def _clock(self) -> str:
        return f"{time.strftime('%H:%M:%S')} +{time.monotonic() - self.started:7.1f}s"


def _run_logged(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    with open(log, "w") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        return subprocess.run(command, cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode


def read_params_file(cwd: Path) -> dict:
    """params.yaml as plain YAML, for scheduling only ({} when missing or broken: the stages themselves report
    a missing or broken params.yaml, in one line)."""
    try:
        params = yaml.safe_load((Path(cwd) / "params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return params if isinstance(params, dict) else {}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def pinned_threads(params: dict) -> int:
    """The CPU threads params.yaml pins for each training stage (`cpu.threads`; 0 = none pinned)."""
    cpu = params.get("cpu")
    value = cpu.get("threads", 0) if isinstance(cpu, dict) else 0
    return value if _positive_int(value) else 0


def run_processes(params: dict) -> list[int]:
    """How many processes (GPUs) each network params.yaml trains takes (sweep.networks and baselines.networks,
    `networks.<net>.processes`); malformed entries are left to the stages, which say what is wrong in one line."""
    try:
        networks = params.get("networks") or {}
        chosen = [*((params.get("sweep") or {}).get("networks") or []),
                  *((params.get("baselines") or {}).get("networks") or [])]
        counts = [(networks.get(name) or {}).get("processes", 1) for name in dict.fromkeys(chosen)]
    except (AttributeError, TypeError):
        return []
    return [c for c in counts if _positive_int(c)]


def largest_run_processes(params: dict) -> int:
    """How many processes (GPUs) one training stage takes at most."""
    return max(run_processes(params), default=1)


def drop_stale_lock_entries(cwd: Path, declared: list[str]) -> list[str]:
    """Remove dvc.lock's entries of stages that dvc.yaml no longer declares (a grid that changed: an s0 value
    taken out). DVC keeps them for ever, and rewrites the whole file after every stage. Written with DVC's own
    YAML round-trip, so the rest of the file stays byte for byte as DVC left it."""
    from dvc.utils.serialize import modify_yaml

    lock = Path(cwd) / "dvc.lock"
    if not lock.exists():
        return []
    keep = set(declared)
    with modify_yaml(lock) as data:
        stale = [name for name in (data.get("stages") or {}) if name not in keep]
        for name in stale:
            del data["stages"][name]
    return stale


def run_parallel(jobs: int | None = None, gpus: list[str] | None = None, dry_run: bool = False,
                 cwd: Path = Path("."), log_dir: Path | None = None, say: Callable[[str], None] = print,
                 threads: int | None = None) -> int:
    """Head stages, then the out-of-date fan-out stages `jobs` at a time, then the tail. Returns the exit
    status: 0 when everything is up to date afterwards, 1 when a stage failed (named, with its log)."""
    started = time.monotonic()
    cwd = Path(cwd)
    log_dir = cwd / LOG_DIR if log_dir is None else log_dir
    require_workspace(cwd)
    for holder in drop_dead_holders(cwd):  # before any dvc of ours starts: theirs may have our process ids
        say(dropped_line(holder))
    changed = changed_stages(cwd)
    if not changed:  # one `dvc status` (~1.5 s) instead of a graph, a scheduler and a tail `dvc repro`
        say(f"{time.strftime('%H:%M:%S')} every stage is up to date (dvc status): nothing to run")
        return 0
    pipeline = read_pipeline(cwd)
    parts = split(pipeline)
    gpus = detect_gpus() if gpus is None else gpus
    cores = available_cores()
    params = read_params_file(cwd)
    pinned, per_stage = pinned_threads(params), largest_run_processes(params)
    if not jobs:  # a GPU (group) each; on the CPU, a worker per `cpu.threads` cores (or per 2) of each process
        jobs = max(1, len(gpus) // per_stage) if gpus else max(1, len(cores) // ((pinned or 2) * per_stage))
    slots = make_slots(jobs, gpus, cores, base_env(), shutil.which("taskset"), threads or pinned or None, per_stage)
    dvc = dvc_executable()
    elapsed = lambda: f"{time.monotonic() - started:.1f}s"  # noqa: E731

    stale = out_of_date(pipeline, changed)
    head_todo = [s for s in parts.head if s in stale]
    if dry_run:
        todo = pipeline.ordered(stale & set(parts.fanout))
        waves: dict[int, list[str]] = {}
        for stage, depth in depths(pipeline, todo).items():
            waves.setdefault(depth, []).append(stage)
        say(f"plan for {cwd.resolve()} ({len(slots)} workers; nothing is run with --dry-run):")
        say(f"  1. dvc --wait-for-lock repro {' '.join(head_todo)}" if head_todo else "  1. head stages up to date: "
            + (", ".join(parts.head) or "none"))
        say(f"  2. {len(todo)} of {len(parts.fanout)} fan-out stages, `dvc --wait-for-lock repro -s <stage>` each, "
            f"a stage once the stages it needs are done:")
        for depth in sorted(waves):
            say(f"     wave {depth + 1}: " + " ".join(waves[depth]))
        for slot in slots:
            say(f"     worker {slot.index}: {slot.label}" + (f" ({' '.join(slot.prefix)})" if slot.prefix else ""))
        say(f"  3. dvc --wait-for-lock repro   (tail: {', '.join(parts.tail) or 'none'})")
        say(f"  logs: {log_dir}/<stage>.log")
        return 0

    log_dir.mkdir(parents=True, exist_ok=True)
    env = base_env()
    if head_todo:
        say(f"{time.strftime('%H:%M:%S')} start  head stages {' '.join(head_todo)}")
        log = log_dir / "head.log"
        if _run_logged([dvc, "--wait-for-lock", "repro", *head_todo], cwd, env, log) != 0:
            say(f"{time.strftime('%H:%M:%S')} FAILED head stages; log: {log}")
            say(f"failed: {' '.join(head_todo)} (log: {log}); nothing else was run")
            return 1
        say(f"{time.strftime('%H:%M:%S')} done   head stages in {elapsed()}")
        stale = out_of_date(pipeline, changed_stages(cwd))
    todo = stale & set(parts.fanout)
    say(f"{time.strftime('%H:%M:%S')} {len(todo)} of {len(parts.fanout)} fan-out stages to run, {len(slots)} at a time")
    runner = Runner(pipeline, todo, slots, cwd, log_dir, say)
    runner.run()

    failed = [runner.outcomes[s] for s in pipeline.ordered(runner.outcomes) if runner.outcomes[s].returncode]
    skipped = dict(runner.skipped)
    tail_status = "not needed"
    if failed:
        for stage in parts.tail:
            skipped.setdefault(stage, failed[0].stage)
        tail_status = "skipped (a fan-out stage failed)"
    else:
        say(f"{time.strftime('%H:%M:%S')} start  tail: dvc repro ({', '.join(parts.tail) or 'nothing left'})")
        log = log_dir / "tail.log"
        began = time.monotonic()
        if _run_logged([dvc, "--wait-for-lock", "repro"], cwd, env, log) != 0:
            say(f"{time.strftime('%H:%M:%S')} FAILED tail after {time.monotonic() - began:.1f}s; log: {log}")
            failed.append(Outcome("dvc repro (tail: " + ", ".join(parts.tail) + ")", 1, 0.0, log, True))
            tail_status = "failed"
        else:
            say(f"{time.strftime('%H:%M:%S')} done   tail in {time.monotonic() - began:.1f}s")
            tail_status = "done"
            dropped = drop_stale_lock_entries(cwd, pipeline.stages)
            if dropped:
                say(f"dvc.lock: dropped {len(dropped)} entries of stages dvc.yaml no longer declares (an earlier grid)")

    ran = sum(o.ran for o in runner.outcomes.values() if not o.returncode)
    restored = sum(not o.ran for o in runner.outcomes.values() if not o.returncode)
    say(f"finished in {elapsed()}: {ran} fan-out stages ran, {restored} restored/up to date, "
        f"{len(failed)} failed, {len(skipped)} skipped; tail {tail_status}")
    for outcome in failed:
        say(f"failed: {outcome.stage} (log: {outcome.log})")
    for stage in pipeline.ordered(skipped):
        say(f"skipped: {stage} (needs failed {skipped[stage]})")
    return 1 if failed else 0


# --- the `cs-repro parallel` command ---------------------------------------------------------------------


def parallel_command(
    jobs: Annotated[Optional[int], typer.Option("-j", "--jobs", help="stages at a time (default: one per GPU, else cores // cpu.threads of params.yaml, or cores // 2)")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPUs to use round-robin, e.g. 0,1 (default: all visible; 'none' = CPU); a stage whose runs train on N processes gets N of them")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, run nothing")] = False,
    log_dir: Annotated[Optional[Path], typer.Option(help="per-stage logs (default .cache/parallel-logs)")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads per worker (default: params.yaml's cpu.threads, else its share, cores // N)")] = None,
) -> None:
    """Reproduce the pipeline with N stages at a time: head stages, then every out-of-date fan-out stage
    (`dvc --wait-for-lock repro -s`, one GPU or one share of the cores each), then evaluate/report."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    code = run_parallel(jobs, parse_gpus(gpus), dry_run, Path("."), log_dir, threads=threads)
    if code:
        raise typer.Exit(code)


# --- SLURM arrays (used by slurm/make_array.py) ----------------------------------------------------------


@dataclass
class Wave:
    stages: list[Optional[str]]  # array index -> stage (None: an unused index)
    dependency: str  # "afterok" on the whole previous wave, or "aftercorr" (task i waits for task i)
    head: bool = False  # the head stages (prepare@*, training_code): no GPU needed

    @property
    def indices(self) -> list[int]:
        return [i for i, s in enumerate(self.stages) if s is not None]


def slurm_waves(pipeline: Pipeline, todo: set[str]) -> list[Wave]:
    """One array per wave: the head stages, then fan-out stages by dependency depth. When every stage of
    a wave needs exactly one stage of the previous wave (cs_retrain@X <- cs_search@X), it takes that
    stage's array index so it can start as soon as that one task is done (aftercorr)."""
    parts = split(pipeline)
    fan = [s for s in parts.fanout if s in todo]
    head = [s for s in parts.head if s in pipeline.closure(fan, "up") or s in todo]
    by_depth: dict[int, list[str]] = {}
    for stage, depth in depths(pipeline, fan).items():
        by_depth.setdefault(depth, []).append(stage)
    waves = [Wave(list(head), "afterok", head=True)] if head else []
    for depth in sorted(by_depth):
        stages = by_depth[depth]
        previous = waves[-1] if waves else None
        aligned = _align(pipeline, stages, previous) if depth > 0 else None
        waves.append(Wave(aligned, "aftercorr") if aligned else Wave(stages, "afterok"))
    return waves


def _align(pipeline: Pipeline, stages: list[str], previous: Wave | None) -> list[Optional[str]] | None:
    if previous is None:
        return None
    index = {s: i for i, s in enumerate(previous.stages) if s is not None}
    placed: dict[int, str] = {}
    for stage in stages:
        parents = [u for u in pipeline.upstream[stage] if u in index]
        if len(parents) != 1 or index[parents[0]] in placed:
            return None
        parent = parents[0]
        # everything else it needs must be done before its parent could start
        others = pipeline.closure([stage], "up") - {parent} - pipeline.closure([parent], "up")
        if others:
            return None
        placed[index[parent]] = stage
    return [placed.get(i) for i in range(max(placed) + 1)]
