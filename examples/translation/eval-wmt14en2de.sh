#!/usr/bin/env bash
# Evaluate a WMT'14 en-de run on newstest2014: average the last 5 epoch checkpoints, beam 4,
# lenpen 0.6; compound-split BLEU (fairseq's compound_split_bleu.sh, the paper's metric),
# tokenized BLEU, and sacreBLEU / chrF of the Moses-detokenized output against the untokenized
# reference, with their signatures.
# Usage: eval-wmt14en2de.sh DATA_BIN SAVE_DIR [--baseline-log FILE] [fairseq-generate options...]
#   --baseline-log: a baseline's generate log (the FILE this script wrote for it): adds the
#                   paired bootstrap p-value of the BLEU difference
# Writes SAVE_DIR/checkpoint.avg5.pt and its .test.txt (generate log) and .test.json (scores).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: $0 DATA_BIN SAVE_DIR [--baseline-log FILE] [fairseq-generate options...]"
data=$1 save=$2; shift 2
baseline=()
if [ "${1:-}" = --baseline-log ]; then baseline=(--baseline-generate-log "$2"); shift 2; fi
rdrop-average-checkpoints --inputs "$save" --num-epoch-checkpoints 5 \
  --output "$save/checkpoint.avg5.pt"
generate_and_score "$data" "$save/checkpoint.avg5.pt" --lang de --raw-ref "$data/raw/test.de" \
  "${baseline[@]}" -- --beam 4 --lenpen 0.6 "$@"
