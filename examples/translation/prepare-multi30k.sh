#!/usr/bin/env bash
# Multi30k de-en (task 1): raw text -> joint sentencepiece -> fairseq-preprocess.
# Usage: prepare-multi30k.sh [--data DIR] [--out DIR] [--vocab-size N]
#   --data: folder with {train,val,test_2016_flickr}.{de,en} (default ../shared/data/multi30k-de-en
#           beside the repo when present, else the public corpus is downloaded)
#   --out:  data-bin folder (default data-bin/multi30k-de-en); also holds spm.model and raw/ refs
set -euo pipefail
source "$(dirname "$0")/common.sh"
data= out=data-bin/multi30k-de-en vocab=8000
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --vocab-size) vocab=$2; shift 2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
[ -e "$out/.complete" ] && { echo "$out already prepared"; exit 0; }
if [ -z "$data" ] && [ -d "$SHARED_DATA/multi30k-de-en" ]; then data=$SHARED_DATA/multi30k-de-en; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/multi30k.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -z "$data" ]; then
  data=$work/download
  mkdir -p "$data"
  url=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw
  for f in train val test_2016_flickr; do for l in de en; do
    echo "downloading $url/$f.$l.gz"
    curl -fsSL "$url/$f.$l.gz" | gunzip > "$data/$f.$l" || die "download failed: $url/$f.$l.gz"
  done; done
fi
[ -d "$data" ] || die "--data $data: no such directory"
$PYTHON "$ROOT/scripts/check_parallel.py" "$data" train val test_2016_flickr --langs de en

echo "== sentencepiece (joint, $vocab) on $data/train.{de,en}"
$PYTHON "$ROOT/scripts/sentencepiece_joint.py" train --model "$work/spm" --vocab-size "$vocab" \
  "$data/train.de" "$data/train.en"
mkdir -p "$work/spm-text" "$work/raw"
for pair in train:train val:valid test_2016_flickr:test; do
  for l in de en; do
    $PYTHON "$ROOT/scripts/sentencepiece_joint.py" encode --model "$work/spm.model" \
      --input "$data/${pair%%:*}.$l" --output "$work/spm-text/${pair##*:}.$l"
    cp "$data/${pair%%:*}.$l" "$work/raw/${pair##*:}.$l"
  done
done

echo "== fairseq-preprocess"
fairseq-preprocess --source-lang de --target-lang en --joined-dictionary \
  --trainpref "$work/spm-text/train" --validpref "$work/spm-text/valid" --testpref "$work/spm-text/test" \
  --destdir "$work/bin" --workers 2 > "$work/preprocess.log" 2>&1 \
  || { cat "$work/preprocess.log" >&2; die "fairseq-preprocess failed"; }
cp "$work/spm.model" "$work/spm.vocab" "$work/bin/"
mv "$work/raw" "$work/bin/raw"
rm -rf "$out"; mkdir -p "$(dirname "$out")"
mv "$work/bin" "$out"
touch "$out/.complete"
echo "prepared $out"
