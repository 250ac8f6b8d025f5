"""A GPU profile's whole pipeline, truncated to minutes, on fixture data: every stage kind runs on the device
through `cs-repro parallel`, as a real run would. For the device check (benchmarks/device_check.sh).

    PYTHONPATH=src:tests python benchmarks/truncated_pipeline.py --profile imagenet --out /tmp/imagenet-run

paper: every stage kind once, on ResNet-20, CIFAR-10-format files (1 epoch, 2 batches per epoch); imagenet: ResNet-50 on a
tiny tree of JPEGs at 64-pixel crops, with `--processes` processes per run (as many GPUs each). Writes the
pipeline's log, REPORT.md, results.json and the stages' timings under --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

TRUNCATE = ("epochs=1", "lr_milestones=[]", "max_batches=2", "warmup_epochs=0")


def overrides(profile: str, data: Path, processes: int) -> list[str]:
    if profile == "paper":
        # every stage kind once, on ResNet-20 (VGG-16's epochs are gpu_epochs.py's): ~20 stages
        common = [f"data.root={data}", "data.download=false", "data.verify_checksums=false", "imp.levels=1",
                  "sweep.networks=[resnet20]", "sweep.seeds=[0]", "sweep.s0=[0.0]", "baselines.sparsities=[0.9]",
                  "l0.penalties=[0.001]", "baselines.layer_budgets=[erk]", "sensitivity.settings=['lambda=1e-07']"]
        return common + [f"networks.resnet20.{item}" for item in (*TRUNCATE, "rewind_epoch=1", "batch_size=64",
                                                                  "val_size=100")]
    if profile == "imagenet":
        return [f"data.root={data}", "data.workers=2", "sweep.s0=[0.0]", "baselines.sparsities=[0.9]",
                "l0.penalties=[0.001]", "gmp.frequency=1", "magnitude.finetune_epochs=1"] + [
            f"networks.resnet50.{item}" for item in (*TRUNCATE, f"batch_size={16 * processes}",
                                                     f"processes={processes}", "val_size=8", "image_size=64")]
    raise SystemExit(f"--profile: paper or imagenet, not {profile!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--processes", type=int, default=1, help="imagenet: processes (GPUs) per run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from fixtures import write_cifar10, write_image_folder
    from test_pipeline_run import make_pipeline_repo

    from cs_repro.profiles import compose_profile

    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    data = (write_cifar10(work / "cifar", n_per_batch=200, n_test=200) if args.profile == "paper"
            else write_image_folder(work / "imagenet", classes=4, train_per_class=16, val_per_class=4))
    params = compose_profile(args.profile, overrides(args.profile, data, args.processes), conf_dir=REPO / "conf")
    repo = make_pipeline_repo(work / "repo", params)
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "cs-repro"), "parallel"], cwd=repo, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.profile}-parallel.log").write_text(done.stdout + done.stderr)
    for name in ("figures/REPORT.md", "metrics/results.json"):
        if (repo / name).exists():
            shutil.copy(repo / name, args.out / f"{args.profile}-{Path(name).name}")
    timings = {str(path.parent.relative_to(repo / "timings")): json.loads(path.read_text())
               for path in sorted((repo / "timings").rglob("timing.json"))} if (repo / "timings").exists() else {}
    (args.out / f"{args.profile}-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"{args.profile}: cs-repro parallel exit {done.returncode} in {seconds:.0f} s; {len(timings)} runs timed; "
          f"log {args.out / f'{args.profile}-parallel.log'}", flush=True)
    shutil.rmtree(work / "cifar", ignore_errors=True)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
