#!/usr/bin/env bash
# Baseline vs R-Drop on Multi30k de-en, trained on the CPU, with a small sweep on val.
# Usage: experiment-multi30k.sh [WORK_DIR]   (default work/multi30k; re-running resumes)
#   1. six trainings of the same model on the same data, two at a time, one thread each: the
#      baseline (stock label_smoothed_cross_entropy) and R-Drop (alpha 2) with dropout 0.3 for
#      30 epochs; the baseline and R-Drop (alpha 2 and 5) with dropout 0.1 for 20 epochs; and
#      R-Drop alpha 5 with dropout 0.3 for 6 epochs
#   2. pick the baseline and the R-Drop run with the best validation BLEU (never test)
#   3. test2016 for the two picks: sacreBLEU, chrF, paired bootstrap p-value; results.json,
#      hypotheses, curves.png in examples/translation/results/multi30k (experiment_report.py)
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=${1:-$ROOT/work/multi30k}
data=$work/data-bin
results=$ROOT/examples/translation/results/multi30k
bash "$ROOT/examples/translation/prepare-multi30k.sh" --out "$data"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() { train_multi30k_run "$work" "$data" "$@"; }

( run baseline-d0.3 30 --baseline --dropout 0.3; run baseline-d0.1 20 --baseline --dropout 0.1
  run rdrop-a5-d0.1 20 --rdrop-alpha 5 --dropout 0.1 ) &
lane1=$!
( run rdrop-a2-d0.3 30 --rdrop-alpha 2 --dropout 0.3; run rdrop-a5-d0.3 6 --rdrop-alpha 5 --dropout 0.3
  run rdrop-a2-d0.1 20 --rdrop-alpha 2 --dropout 0.1 ) &
lane2=$!
wait $lane1 || die "a training failed (lane 1)"
wait $lane2 || die "a training failed (lane 2)"
report=$ROOT/examples/translation/experiment_report.py
read -r baseline rdrop < <($PYTHON "$report" multi30k --work "$work" --select)
echo "picked on val: $baseline, $rdrop"
bash "$ROOT/examples/translation/eval-multi30k.sh" "$data" "$work/$baseline/checkpoint_best.pt" \
  "$work/baseline.test2016"
bash "$ROOT/examples/translation/eval-multi30k.sh" "$data" "$work/$rdrop/checkpoint_best.pt" \
  "$work/rdrop.test2016" --baseline-hyp "$work/baseline.test2016.hyp"
$PYTHON "$report" multi30k --work "$work" --out "$results"
