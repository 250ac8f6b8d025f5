#!/usr/bin/env bash
# One task of a cs-repro SLURM array (docs/parallel.md); runs the same without SLURM:
#
#   bash slurm/job.sh STAGE_LIST_FILE INDEX
#
# STAGE_LIST_FILE is written by slurm/make_array.py: '# key=value' lines (main, commit, cache, venv), then
# one stage per line; the INDEX-th stage line (0-based) is this task's stage ('-' = no stage at INDEX).
# The task works in its own clone under $CS_REPRO_SCRATCH (else $SLURM_TMPDIR, $TMPDIR or /tmp) with the
# shared DVC cache. `dvc repro <stage>` restores the stages it needs (prepare, the search of a retrain)
# from the shared run-cache, which the earlier waves filled, runs the stage itself and saves its outputs
# and its run-cache entry into the shared cache, where the collector finds them.
# A task across several nodes (a run with more processes than a node has GPUs; make_array.py asks for
# --nodes=K and starts this script on every node with srun) trains one run: node 0 works as above, but in a
# clone under the main workspace that every node sees, and exports where its stage will announce itself; the
# stage writes that file once DVC has restored its inputs, and the other nodes then run the same command in
# the same clone, which joins the run's rendezvous on node 0 (src/cs_repro/launch.py, docs/parallel.md).
# Environment overrides: CS_REPRO_MAIN, CS_REPRO_COMMIT, CS_REPRO_SHARED_CACHE, CS_REPRO_VENV,
# CS_REPRO_RDZV_ENDPOINT (host:port of node 0; default: the job's first host, a port from the job id).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STAGE_LIST_FILE INDEX" >&2
  exit 2
fi
list=$(realpath "$1")
index=$2
setting() { sed -n "s/^# $1=//p" "$list" | head -n 1; }
main=${CS_REPRO_MAIN:-$(setting main)}
commit=${CS_REPRO_COMMIT:-$(setting commit)}
cache=${CS_REPRO_SHARED_CACHE:-$(setting cache)}
venv=${CS_REPRO_VENV:-$(setting venv)}
stage=$(grep -v '^#' "$list" | sed -n "$((index + 1))p")
if [[ -z "$stage" || "$stage" == "-" ]]; then
  echo "no stage at index $index of $list"
  exit 0
fi
if [[ -z "$main" || -z "$cache" ]]; then
  echo "$list names no main workspace or shared cache (# main=..., # cache=...)" >&2
  exit 2
fi
if [[ -n "$venv" ]]; then
  export PATH="$venv/bin:$PATH"
fi

nodes=${SLURM_JOB_NUM_NODES:-1}
node=${SLURM_NODEID:-0}
if (( nodes > 1 )); then
  # one folder per attempt (a requeued job keeps its id), on the main workspace's shared file system
  work="$main/.cache/slurm-work/${SLURM_JOB_ID:?a task across nodes runs under SLURM}-${SLURM_RESTART_COUNT:-0}"
  export CS_REPRO_NNODES=$nodes CS_REPRO_RUN_ID="cs-repro-$SLURM_JOB_ID" CS_REPRO_RUN_MARKER="$work/run.json"
  if [[ -z "${CS_REPRO_RDZV_ENDPOINT:-}" ]]; then
    first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    export CS_REPRO_RDZV_ENDPOINT="$first:$((29400 + SLURM_JOB_ID % 1000))"
  fi
  if (( node != 0 )); then
    export PYTHONPATH="$work/repo/src${PYTHONPATH:+:$PYTHONPATH}"
    echo "task $index: $stage, node $node of $nodes on $(hostname): waiting for node 0's stage ($CS_REPRO_RDZV_ENDPOINT)"
    exec python -m cs_repro.launch join "$CS_REPRO_RUN_MARKER" "${CS_REPRO_JOIN_TIMEOUT:-1800}"
  fi
  rm -rf "$work"
  mkdir -p "$work"
  # No run announced by the end (the stage restored from the run-cache, or dvc failed before it): tell the
  # other nodes so they end instead of waiting, and give them a few polls to read it before the clone goes.
  trap '[[ -e "$CS_REPRO_RUN_MARKER" ]] || { echo "{\"processes\": 0}" > "$work/none.json" && mv "$work/none.json" "$CS_REPRO_RUN_MARKER"; }
        sleep 3; cd / && rm -rf "$work"' EXIT
else
  scratch=${CS_REPRO_SCRATCH:-${SLURM_TMPDIR:-${TMPDIR:-/tmp}}}
  mkdir -p "$scratch"
  work=$(mktemp -d "$scratch/cs-repro-XXXXXX")
  trap 'cd / && rm -rf "$work"' EXIT
fi
git clone -q --no-checkout "$main" "$work/repo"
cd "$work/repo"
git checkout -q "${commit:-HEAD}"
dvc cache dir --local "$cache"
dvc config --local cache.shared group
# Resume checkpoints (keyed by the run's full configuration) live in the main workspace, so a requeued or
# preempted task continues from its last epoch instead of starting over.
mkdir -p "$main/.cache/checkpoints" .cache
ln -s "$main/.cache/checkpoints" .cache/checkpoints
# The stages run this clone's code (the commit DVC hashes), also when the venv holds an editable install
# of the main workspace.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

echo "task $index: $stage at ${commit:-HEAD} on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}, cache $cache"
started=$SECONDS
dvc repro "$stage"
echo "task $index: $stage done in $((SECONDS - started))s"
# The marker names the commit: make_array.py leaves finished stages of this commit out of a re-submit.
mkdir -p "$(dirname "$list")/done"
echo "$(git rev-parse HEAD) $stage" > "$(dirname "$list")/done/${stage//[^A-Za-z0-9@._=+-]/_}"
