#!/usr/bin/env bash
# Quick start: Multi30k de-en raw text -> joint sentencepiece -> fairseq-preprocess -> a small
# Transformer trained with R-Drop -> beam search on test2016 -> sacreBLEU, 3 epochs on a CPU
# (measured from a fresh clone on 2 cores shared with the test suite, setup-venv.sh included:
# 19 min 4 s, test2016 BLEU 13.58, chrF 28.81);
# on a GPU it trains the recipe's full 10 epochs with --fp16.
# Usage: quickstart.sh [--data DIR] [--work DIR]
#   --data: folder with {train,val,test_2016_flickr}.{de,en}; default ../shared/data/multi30k-de-en
#           beside the repo when present, else the public corpus is downloaded
#   --work: where data-bin, checkpoints and outputs go (default work/quickstart); re-running
#           resumes from the last checkpoint instead of starting over
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
data=() work=$ROOT/work/quickstart
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=(--data "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
epochs=3
[ "$ON_GPU" = 1 ] && epochs=10

echo "== 1/3 prepare Multi30k -> $work/data-bin"
bash "$here/prepare-multi30k.sh" "${data[@]}" --out "$work/data-bin"
echo "== 2/3 train with R-Drop (alpha 5, $epochs epochs) -> $work/checkpoints"
bash "$here/train-multi30k.sh" "$work/data-bin" "$work/checkpoints" --rdrop-alpha 5 \
  --max-epoch "$epochs" --log-format simple
echo "== 3/3 translate test2016 (beam 5) and score"
bash "$here/eval-multi30k.sh" "$work/data-bin" "$work/checkpoints/checkpoint_best.pt" "$work/test2016"
echo "hypotheses: $work/test2016.hyp   scores: $work/test2016.json"
