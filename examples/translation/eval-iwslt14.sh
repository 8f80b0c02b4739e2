#!/usr/bin/env bash
# Evaluate an IWSLT'14 de-en checkpoint on the test set: beam 5, subwords removed; tokenized
# lowercased BLEU (the paper's metric, as fairseq-score computes it), compound-split BLEU, and
# sacreBLEU / chrF of the Moses-detokenized output with their signatures.
# Usage: eval-iwslt14.sh DATA_BIN CHECKPOINT [--baseline-log FILE] [fairseq-generate options...]
#   --baseline-log: a baseline's generate log (the FILE this script wrote for it): adds the
#                   paired bootstrap p-value of the BLEU difference
# Writes CHECKPOINT's name with .test.txt (the generate log) and .test.json (the scores).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: $0 DATA_BIN CHECKPOINT [--baseline-log FILE] [fairseq-generate options...]"
data=$1 checkpoint=$2; shift 2
baseline=()
if [ "${1:-}" = --baseline-log ]; then baseline=(--baseline-generate-log "$2"); shift 2; fi
generate_and_score "$data" "$checkpoint" --lang en "${baseline[@]}" -- --beam 5 "$@"
