#!/usr/bin/env bash
# Quick start: Multi30k de-en raw text -> joint sentencepiece -> fairseq-preprocess -> a small
# Transformer trained with R-Drop -> beam search on test2016 -> sacreBLEU, 3 epochs on a CPU
# (measured from a fresh clone on 2 cores shared with the test suite, setup-venv.sh included:
# 24 min 8 s, test2016 BLEU 13.47, chrF 28.70: results/quickstart.md);
# on a GPU it trains the recipe's full 10 epochs with --fp16.
# Usage: quickstart.sh [--data DIR] [--work DIR] [--verbose]
#   --data: folder with {train,val,test_2016_flickr}.{de,en}; default $SHARED_DATA/multi30k-de-en
#           (SHARED_DATA defaults to ../shared/data beside the repo) when present, else the public
#           corpus is downloaded
#   --work: where data-bin, checkpoints, outputs and logs go (default work/quickstart); re-running
#           resumes from the last checkpoint instead of starting over
#   --verbose: show the whole output of every step (by default it goes to WORK/logs/ and the
#           console shows a progress bar per epoch and for translation, or on a non-terminal
#           periodic lines, the epoch summaries and the scores)
# PYTHON=path: the Python whose rdrop-fairseq and fairseq to use (default: .venv of the clone).
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
data=() work=$ROOT/work/quickstart verbose=()
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=(--data "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --verbose) verbose=(--verbose); shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see $0 --help)" ;;
  esac
done
epochs=3
[ "$ON_GPU" = 1 ] && epochs=10
# a bar per epoch on a terminal, else fairseq's periodic lines
if [ -t 1 ]; then progress=(--log-format tqdm); else progress=(--log-format simple --log-interval 50); fi
logs=$work/logs
mkdir -p "$logs"
# step LOG COMMAND...: COMMAND's whole output into LOG, a short view of it here
step() { local log=$1; shift; "$PYTHON" -m rdrop_tools.run_logged --log "$log" "${verbose[@]}" -- "$@"; }
start=$SECONDS

echo "work directory: $work (logs in $logs)"
echo "== 1/3 prepare Multi30k: sentencepiece, fairseq-preprocess"
step "$logs/prepare.log" bash "$here/prepare-multi30k.sh" "${data[@]}" --out "$work/data-bin"
echo "== 2/3 train with R-Drop (alpha 5, $epochs epochs)"
step "$logs/train.log" bash "$here/train-multi30k.sh" "$work/data-bin" "$work/checkpoints" \
  --rdrop-alpha 5 --max-epoch "$epochs" "${progress[@]}"
echo "== 3/3 translate test2016 (beam 5) and score"
step "$logs/test2016.log" bash "$here/eval-multi30k.sh" "$work/data-bin" \
  "$work/checkpoints/checkpoint_best.pt" "$work/test2016"
"$PYTHON" - "$work/test2016.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"test2016: BLEU {r['bleu']:.2f}, chrF2 {r['chrf']:.2f} (sacreBLEU {r['signature'].split('version:')[-1]})")
PY
echo "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "checkpoints: $work/checkpoints"
echo "hypotheses:  $work/test2016.hyp"
echo "scores:      $work/test2016.json"
echo "full logs:   $logs/prepare.log, train.log, test2016.log"
