#!/usr/bin/env bash
# Translate a Multi30k split with beam 5 and score the detokenized output against the raw
# references: sacreBLEU and chrF with signatures (and the paired bootstrap p-value against a
# baseline's hypotheses when given).
# Usage: eval-multi30k.sh DATA_BIN CHECKPOINT OUT_PREFIX [--subset test|valid] [--baseline-hyp FILE]
# Writes OUT_PREFIX.gen.log (fairseq-generate), OUT_PREFIX.hyp (one line per sentence), OUT_PREFIX.json.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -ge 3 ] || die "usage: $0 DATA_BIN CHECKPOINT OUT_PREFIX [--subset test|valid] [--baseline-hyp FILE]"
data=$1 checkpoint=$2 out=$3; shift 3
subset=test baseline=()
while [ $# -gt 0 ]; do
  case $1 in
    --subset) subset=$2; shift 2 ;;
    --baseline-hyp) baseline=(--baseline-hyp "$2"); shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -f "$checkpoint" ] || die "no such checkpoint: $checkpoint"
[ -f "$data/raw/$subset.en" ] || die "no reference $data/raw/$subset.en (run prepare-multi30k.sh)"
mkdir -p "$(dirname "$out")"
fairseq-generate "$data" --user-dir "$USER_DIR" --path "$checkpoint" --gen-subset "$subset" \
  --beam 5 --remove-bpe sentencepiece --batch-size 128 "${DEVICE_FLAGS[@]}" > "$out.gen.log.part"
mv "$out.gen.log.part" "$out.gen.log"
rdrop-evaluate --generate-log "$out.gen.log" --ref "$data/raw/$subset.en" \
  --write-hyp "$out.hyp" --save-json "$out.json" "${baseline[@]}"
