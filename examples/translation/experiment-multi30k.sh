#!/usr/bin/env bash
# Baseline vs R-Drop on Multi30k de-en: a small sweep on val, then test2016 for the picks.
# Usage: experiment-multi30k.sh [WORK_DIR]   (default work/multi30k; resumable: finished runs are kept)
# Runs two trainings at a time, one thread each (CPU); results go to
# examples/translation/results/multi30k/ (see scripts/multi30k_report.py).
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=${1:-$ROOT/work/multi30k}
data=$work/data-bin
bash "$ROOT/examples/translation/prepare-multi30k.sh" --out "$data"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

run() {  # run NAME [train-multi30k.sh options...]: train unless finished, timing the wall clock
  local name=$1; shift
  [ -e "$work/$name/.done" ] && return 0
  rm -rf "$work/$name"; mkdir -p "$work/$name"
  echo "$(date +%T) start $name: $*"
  local start=$SECONDS
  bash "$ROOT/examples/translation/train-multi30k.sh" "$data" "$work/$name" "$@" > "$work/$name/stdout.log" 2>&1 \
    || die "training $name failed: see $work/$name/stdout.log"
  echo "{\"wall_s\": $((SECONDS - start)), \"args\": \"$*\"}" > "$work/$name/.done"
  echo "$(date +%T) done $name in $((SECONDS - start)) s"
}

# two slots of similar total cost
( run baseline-d0.3 --baseline --dropout 0.3; run rdrop-a2-d0.3 --rdrop-alpha 2 --dropout 0.3 ) &
( run rdrop-a5-d0.3 --rdrop-alpha 5 --dropout 0.3; run baseline-d0.1 --baseline --dropout 0.1 ) &
wait
echo "all trainings done"
