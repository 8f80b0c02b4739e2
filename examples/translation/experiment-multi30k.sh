#!/usr/bin/env bash
# Baseline vs R-Drop on Multi30k de-en, trained on the CPU, with a small sweep on val.
# Usage: experiment-multi30k.sh [WORK_DIR]   (default work/multi30k; re-running resumes)
#   1. main comparison, 10 epochs each, the paper's IWSLT settings: baseline (stock criterion,
#      dropout 0.3) and R-Drop (alpha 5, dropout 0.3)
#   2. sweep on val at a 5-epoch budget: R-Drop alpha 2, baseline dropout 0.1, compared with the
#      main runs' epoch-5 valid BLEU (run on the core the baseline frees: R-Drop costs 2x)
#   3. test2016 for the main runs, plots and results.json (scripts/multi30k_report.py)
# Two trainings at a time, one thread each.
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=${1:-$ROOT/work/multi30k}
data=$work/data-bin
results=$ROOT/examples/translation/results/multi30k
bash "$ROOT/examples/translation/prepare-multi30k.sh" --out "$data"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

run() {  # run NAME [train-multi30k.sh options...]: train (resuming) unless finished
  local name=$1; shift
  [ -e "$work/$name/.done" ] && return 0
  mkdir -p "$work/$name"
  echo "$(date +%T) start $name: $*"
  bash "$ROOT/examples/translation/train-multi30k.sh" "$data" "$work/$name" "$@" \
    >> "$work/$name/stdout.log" 2>&1 || die "training $name failed: see $work/$name/stdout.log"
  echo "$*" > "$work/$name/.done"
  echo "$(date +%T) done $name"
}

run rdrop-a5-d0.3 --rdrop-alpha 5 --dropout 0.3 &
run baseline-d0.3 --baseline --dropout 0.3
run sweep-rdrop-a2-d0.3 --rdrop-alpha 2 --dropout 0.3 --max-epoch 5
run sweep-baseline-d0.1 --baseline --dropout 0.1 --max-epoch 5
wait

mkdir -p "$results"
bash "$ROOT/examples/translation/eval-multi30k.sh" "$data" "$work/baseline-d0.3/checkpoint_best.pt" \
  "$work/baseline.test2016"
bash "$ROOT/examples/translation/eval-multi30k.sh" "$data" "$work/rdrop-a5-d0.3/checkpoint_best.pt" \
  "$work/rdrop.test2016" --baseline-hyp "$work/baseline.test2016.hyp"
$PYTHON "$ROOT/scripts/multi30k_report.py" --work "$work" --out "$results"
