#!/usr/bin/env bash
# R-Drop + Cutoff on Multi30k de-en, on the CPU, beside the committed baseline and R-Drop picks
# of experiment-multi30k.sh (examples/translation/results/multi30k).
# Usage: experiment-multi30k-cutoff.sh [WORK_DIR]   (default work/multi30k-cutoff; re-running resumes)
#   1. two trainings, one thread each, in sequence, with the model, data and budget of the R-Drop
#      pick (dropout 0.1, 20 epochs), the second copy's token embeddings cut off with p 0.05:
#      R-Drop + Cutoff (the R-Drop loss, alpha 2) and SimCut (copy 1's NLL + KL(P1||P2), alpha 3
#      as in the SimCut paper); about 2 h each
#   2. each run's best checkpoint by validation BLEU (never test) is scored on test2016 with beam 5:
#      sacreBLEU, chrF, and paired bootstrap p-values against the committed baseline and R-Drop
#      hypotheses
#   3. results.json, results.md, hypotheses, curves.png in examples/translation/results/multi30k-cutoff
#      (experiment_report.py)
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=${1:-$ROOT/work/multi30k-cutoff}
data=$work/data-bin
committed=$ROOT/examples/translation/results/multi30k
results=$ROOT/examples/translation/results/multi30k-cutoff
bash "$ROOT/examples/translation/prepare-multi30k.sh" --out "$data"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() { train_multi30k_run "$work" "$data" "$@"; }

runs=(cutoff-a2-d0.1 simcut-a3-d0.1)
run "${runs[0]}" 20 --rdrop-alpha 2 --dropout 0.1 --rdrop-cutoff 0.05
run "${runs[1]}" 20 --rdrop-alpha 3 --dropout 0.1 --rdrop-cutoff 0.05 --rdrop-loss simcut
for name in "${runs[@]}"; do
  bash "$ROOT/examples/translation/eval-multi30k.sh" "$data" "$work/$name/checkpoint_best.pt" \
    "$work/$name.test2016" --baseline-hyp "$committed/baseline.test2016.hyp"
  rdrop-evaluate --hyp "$work/$name.test2016.hyp" --ref "$data/raw/test.en" \
    --baseline-hyp "$committed/rdrop.test2016.hyp" --save-json "$work/$name.test2016.vs-rdrop.json"
done
$PYTHON "$ROOT/examples/translation/experiment_report.py" cutoff --work "$work" \
  --committed "$committed" --out "$results" "${runs[@]}"
