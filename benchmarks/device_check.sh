#!/usr/bin/env bash
# The device check for a lent GPU: one script, everything written to $OUT, the most wanted numbers first (about 8
# minutes on one H100, estimated: not run on a GPU yet; here SMOKE=1 took 3 min 53 s and the paper step 5 min 24 s
# on the 2-core CPU). Give the device tool a timeout_s of 600.
#   OUT=/tmp/check bash benchmarks/device_check.sh          (on the GPU machine, from the repository root)
#   SMOKE=1 OUT=/tmp/check bash benchmarks/device_check.sh  (here, on the CPU: that the script itself works)
# 1. benchmarks/gpu_epochs.py: the paper profile's networks, seconds per epoch, dense vs CS, fp32 and bf16;
# 2. benchmarks/resnet50_throughput.py: ResNet-50 images/s, dense vs CS, fp32 and bf16, and the input pipeline;
# 3. benchmarks/truncated_pipeline.py: the paper and imagenet profiles' every stage, truncated, on the device.
# Each step's output goes to $OUT as it finishes, so a step cut short by the time limit loses only itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
smoke="${SMOKE:-0}"

step() {  # name, command...: timed, its output kept
  local name=$1; shift
  local started=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/check.log"
  "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  tail -n 15 "$OUT/$name.log" | tee -a "$OUT/check.log"
  echo "== $name: exit $status in $((SECONDS - started)) s" | tee -a "$OUT/check.log"
}

{ nvidia-smi || echo "no nvidia-smi"; git log -1 --format='commit %H %s' || true; } > "$OUT/machine.txt" 2>&1
if [ "$smoke" = 1 ]; then
  step gpu_epochs "$PYTHON" benchmarks/gpu_epochs.py --smoke --epochs 2 --out "$OUT/gpu_epochs.json"
  step resnet50 "$PYTHON" benchmarks/resnet50_throughput.py --batch 4 --image-size 64 --steps 1 --rounds 1 \
    --workers 1 --input-batches 2 --out "$OUT/resnet50.json"
  step pipeline_imagenet "$PYTHON" benchmarks/truncated_pipeline.py --profile imagenet --processes 2 --out "$OUT"
else
  step gpu_epochs "$PYTHON" benchmarks/gpu_epochs.py --epochs 3 --out "$OUT/gpu_epochs.json"
  step resnet50 "$PYTHON" benchmarks/resnet50_throughput.py --batch 128 --steps 20 --rounds 3 --workers 4,8,16 \
    --out "$OUT/resnet50.json"
  step pipeline_paper "$PYTHON" benchmarks/truncated_pipeline.py --profile paper --out "$OUT"
  step pipeline_imagenet "$PYTHON" benchmarks/truncated_pipeline.py --profile imagenet --processes 1 --out "$OUT"
fi
echo "done; results in $OUT" | tee -a "$OUT/check.log"
