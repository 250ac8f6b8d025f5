#!/usr/bin/env bash
# Entry point of the cs-repro image (docker/README.md). Runs outside Docker too: every path comes from env.
#   paper | frankle | extended | quick [ARGS...]    run the pipeline on that profile: dvc exp run -S profile=NAME [ARGS...]
#   anything else             exec'd as given (cs-repro --help, dvc exp show, bash, ...)
# Both run in $OUT_DIR/workspace, a git clone of the image's repository kept on the output volume, so the
# runs, metrics, figures, dvc.lock, experiments and .cache/checkpoints outlive the container; the DVC cache
# is $OUT_DIR/dvc-cache. On every start the workspace's tracked files are reset to the image's commit
# (code, dvc.yaml, conf/) except dvc.lock, params.yaml, metrics/ and figures/, which describe the runs on this volume (so
# `docker run ... cs-repro dvc repro` after a paper run carries on with the paper profile), and untracked
# outputs are kept: a second run resumes or is restored from cache.
# Signals: the image runs this under tini with process-group forwarding, so `docker stop` (SIGTERM) reaches
# dvc and the stage alike; a stage stops at once, keeping every finished epoch (docs/parallel.md).
# Env: APP_DIR (the image's git repository), OUT_DIR (the output volume), PROFILE (used when no argument is
# given), DATA_ROOT (folder holding the data set, passed as data.root), CS_REPRO_DEVICE (cpu|cuda; else auto).
set -euo pipefail

APP_DIR="${APP_DIR:-/opt/cs-repro}"
OUT_DIR="${OUT_DIR:-/work/out}"
DATA_ROOT="${DATA_ROOT:-}"
WORKSPACE="$OUT_DIR/workspace"
# torchvision downloads (CIFAR-10 when data.root is empty) land under $XDG_CACHE_HOME: keep them too.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$OUT_DIR/cache}"

log() { echo "cs-repro: $*" >&2; }

python -c 'import torch
print(f"cs-repro: GPU visible: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
      else "cs-repro: no GPU visible (docker run --gpus all?); continuing on the CPU")' >&2

if ! mkdir -p "$OUT_DIR" 2>/dev/null || [ ! -w "$OUT_DIR" ]; then
  log "$OUT_DIR is not writable by uid $(id -u): chown the mounted folder, or docker run --user \"\$(id -u):\$(id -g)\""
  exit 1
fi
if [ -d "$WORKSPACE/.git" ]; then
  # dvc.lock, params.yaml and the committed outputs (metrics/, figures/) describe the runs on this volume,
  # not the image's committed quick run: keep them across the reset.
  saved="$(mktemp -d)"
  kept_paths=(dvc.lock params.yaml metrics figures)
  for kept in "${kept_paths[@]}"; do cp -a "$WORKSPACE/$kept" "$saved/" 2>/dev/null || true; done
  git -C "$WORKSPACE" fetch -q "$APP_DIR" HEAD
  git -C "$WORKSPACE" reset -q --hard FETCH_HEAD
  for kept in "${kept_paths[@]}"; do
    if [ -e "$saved/$kept" ]; then rm -rf "${WORKSPACE:?}/$kept"; cp -a "$saved/$kept" "$WORKSPACE/$kept"; fi
  done
  rm -rf "$saved"
else
  git clone -q "$APP_DIR" "$WORKSPACE"
fi
cd "$WORKSPACE"
dvc cache dir --local "$OUT_DIR/dvc-cache"
# The cache and the workspace share the volume: hardlinks instead of a second copy of every output.
dvc config --local cache.type reflink,hardlink,copy
for d in runs metrics figures; do  # shortcuts for the host: out/figures etc.
  [ -e "$OUT_DIR/$d" ] && [ ! -L "$OUT_DIR/$d" ] || ln -sfn "workspace/$d" "$OUT_DIR/$d"
done

command="${1:-${PROFILE:-paper}}"
[ $# -gt 0 ] && shift
case "$command" in
  paper | frankle | extended | quick)
    overrides=(-S "profile=$command")
    # Quoted for Hydra's override grammar, so a path with , = [ ] ' or spaces stays one string.
    if [ -n "$DATA_ROOT" ]; then
      quoted="${DATA_ROOT//\'/\\\'}"
      overrides+=(-S "data.root='$quoted'")
    fi
    log "running the $command pipeline in $WORKSPACE: dvc exp run ${overrides[*]} $*"
    exec dvc exp run "${overrides[@]}" "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
