#!/usr/bin/env bash
# Entry point of the cs-repro image (docker/README.md). Runs outside Docker too: every path comes from env.
#   paper | frankle | imagenet | extended | quick [-S KEY=VALUE ...]   run the pipeline on that profile, with overrides:
#       params.yaml composed by `cs-repro use-profile`, checked by `cs-repro preflight`, then `cs-repro parallel`
#       (the runner `make repro` uses: every core, or one stage per GPU)
#   anything else             exec'd as given (cs-repro --help, dvc status, bash, ...)
# Both run in $OUT_DIR/workspace, a git clone of the image's repository kept on the output volume, so the
# runs, metrics, figures, dvc.lock and .cache/checkpoints outlive the container; the DVC cache is
# $OUT_DIR/dvc-cache. On every start the workspace's tracked files are reset to the image's commit (code,
# dvc.yaml, conf/) except dvc.lock, params.yaml, metrics/ and figures/, which describe the runs on this volume
# (so `docker run ... cs-repro dvc repro` after a paper run carries on with the paper profile), and untracked
# outputs are kept: a second run resumes or is restored from cache.
# Before any DVC work a profile run says, in one line each: that nothing is mounted on $OUT_DIR (a warning,
# first), that a GPU profile sees no GPU, that a dataset is missing (both errors, with the docker flags to add).
# Signals: the image runs this under tini with process-group forwarding, so `docker stop` (SIGTERM) reaches
# dvc and the stage alike; a stage stops at once, keeping every finished epoch (docs/parallel.md).
# Env: APP_DIR (the image's git repository), OUT_DIR (the output volume), PROFILE (used when no argument is
# given), DATA_ROOT (folder holding the data set, passed as data.root), CS_REPRO_DEVICE (cpu|cuda; else auto),
# CS_REPRO_IN_CONTAINER (1 in the image: check the volume, word advice for `docker run`).
set -euo pipefail

APP_DIR="${APP_DIR:-/opt/cs-repro}"
OUT_DIR="${OUT_DIR:-/work/out}"
DATA_ROOT="${DATA_ROOT:-}"
IN_CONTAINER="${CS_REPRO_IN_CONTAINER:-0}"
WORKSPACE="$OUT_DIR/workspace"
# torchvision downloads (CIFAR-10 when data.root is empty) land under $XDG_CACHE_HOME: keep them too.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$OUT_DIR/cache}"

log() { echo "cs-repro: $*" >&2; }

command="${1:-${PROFILE:-paper}}"
[ $# -gt 0 ] && shift
case "$command" in
  paper | frankle | imagenet | extended | quick) profile_run=1 ;;
  *) profile_run=0 ;;
esac

# Is something mounted on the output folder? (field 5 of mountinfo is the mount point)
mounted() { awk -v dir="$1" '$5 == dir { found = 1 } END { exit !found }' /proc/self/mountinfo 2>/dev/null; }
if [ "$profile_run" = 1 ] && [ "$IN_CONTAINER" = 1 ] && ! mounted "$OUT_DIR"; then
  log "warning: nothing is mounted on $OUT_DIR, so every output of this run is lost when the container exits; add -v \"\$PWD/out:$OUT_DIR\""
fi

if ! mkdir -p "$OUT_DIR" 2>/dev/null || [ ! -w "$OUT_DIR" ]; then
  log "$OUT_DIR is not writable by uid $(id -u): chown the mounted folder, or docker run --user \"\$(id -u):\$(id -g)\""
  exit 1
fi

if [ "$profile_run" = 0 ]; then
  python -c 'import torch
print(f"cs-repro: GPU visible: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
      else "cs-repro: no GPU visible (docker run --gpus all?); continuing on the CPU")' >&2
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

if [ "$profile_run" = 1 ]; then
  overrides=()
  # Quoted for Hydra's override grammar, so a path with , = [ ] ' or spaces stays one string.
  if [ -n "$DATA_ROOT" ]; then
    quoted="${DATA_ROOT//\'/\\\'}"
    overrides+=("data.root='$quoted'")
  fi
  while [ $# -gt 0 ]; do
    case "$1" in
      -S | --set-param)
        [ $# -ge 2 ] || { log "$1 needs KEY=VALUE"; exit 2; }
        overrides+=("$2"); shift 2 ;;
      *)
        log "after the profile name only -S KEY=VALUE overrides are understood, not '$1' (other commands: docker run ... cs-repro COMMAND)"
        exit 2 ;;
    esac
  done
  cs-repro use-profile "$command" "${overrides[@]}" --out params.yaml
  cs-repro preflight $([ "$IN_CONTAINER" = 1 ] && echo --container)
fi

dvc cache dir --local "$OUT_DIR/dvc-cache"
# The cache and the workspace share the volume: hardlinks instead of a second copy of every output.
dvc config --local cache.type reflink,hardlink,copy
for d in runs metrics figures; do  # shortcuts for the host: out/figures etc.
  [ -e "$OUT_DIR/$d" ] && [ ! -L "$OUT_DIR/$d" ] || ln -sfn "workspace/$d" "$OUT_DIR/$d"
done

if [ "$profile_run" = 1 ]; then
  log "running the $command pipeline in $WORKSPACE: cs-repro parallel"
  exec cs-repro parallel
fi
# A stopped container's dvc processes leave lock entries under process ids this container reuses
# (cs-repro parallel drops them itself).
python -m cs_repro_orchestration.dvc_locks
exec "$command" "$@"
