#!/usr/bin/env bash
# The collector of a cs-repro SLURM run (docs/parallel.md); runs the same without SLURM:
#
#   bash slurm/collect.sh ARRAY_DIR        # the folder slurm/make_array.py wrote (wave*.txt)
#
# In the main workspace, whose DVC cache is the shared one, `dvc repro` restores every fan-out stage from
# the shared run-cache (no training) and runs the aggregation stages (evaluate, report). It refuses when a
# task did not finish, since `dvc repro` would then train that stage here; CS_REPRO_COLLECT_ANYWAY=1
# collects anyway (and trains what is missing).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 ARRAY_DIR" >&2
  exit 2
fi
dir=$(realpath "$1")
shopt -s nullglob
lists=("$dir"/wave*.txt)
if [[ ${#lists[@]} -eq 0 ]]; then
  echo "no wave*.txt in $dir: run slurm/make_array.py first" >&2
  exit 2
fi
setting() { sed -n "s/^# $1=//p" "${lists[0]}" | head -n 1; }
main=${CS_REPRO_MAIN:-$(setting main)}
venv=${CS_REPRO_VENV:-$(setting venv)}
if [[ -n "$venv" ]]; then
  export PATH="$venv/bin:$PATH"
fi

missing=()
for list in "${lists[@]}"; do
  while IFS= read -r stage; do
    [[ -z "$stage" || "$stage" == "-" || "$stage" == \#* ]] && continue
    [[ -e "$dir/done/${stage//[^A-Za-z0-9@._=+-]/_}" ]] || missing+=("$stage")
  done < "$list"
done
if [[ ${#missing[@]} -gt 0 && "${CS_REPRO_COLLECT_ANYWAY:-0}" != 1 ]]; then
  resubmit=$(setting resubmit)
  echo "not collecting: no finished task for ${missing[*]} (logs: $dir/logs)." >&2
  echo "To resubmit exactly what is missing, with its dependencies and a new collector, run: $resubmit" >&2
  echo "(or CS_REPRO_COLLECT_ANYWAY=1 to let dvc repro run them here)" >&2
  exit 1
fi

cd "$main"
dvc --wait-for-lock repro
dvc status
