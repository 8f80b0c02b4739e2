#!/usr/bin/env bash
# Multi30k de-en (task 1): raw text -> joint sentencepiece -> fairseq-preprocess.
# Usage: prepare-multi30k.sh [--data DIR] [--out DIR] [--vocab-size N]
#   --data: folder with {train,val,test_2016_flickr}.{de,en} (default ../shared/data/multi30k-de-en
#           beside the repo when present, else the public corpus is downloaded)
#   --out:  data-bin folder (default data-bin/multi30k-de-en); also holds spm.model, the subword
#           text {train,valid,test}.{de,en} and the raw text raw/{train,valid,test}.{de,en}
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
  echo "downloading Multi30k from $url"
  for f in train val test_2016_flickr; do for l in de en; do
    # curl's and gzip's own messages would only repeat this one line
    { curl -fsSL --retry 2 "$url/$f.$l.gz" 2> /dev/null | gunzip > "$data/$f.$l" 2> /dev/null; } \
      || die "could not download Multi30k ($url/$f.$l.gz; no network?): pass a folder with" \
             "{train,val,test_2016_flickr}.{de,en} as --data DIR, or put those files in" \
             "$SHARED_DATA/multi30k-de-en"
  done; done
fi
[ -d "$data" ] || die "--data $data: no such directory"
rdrop-check-parallel "$data" train val test_2016_flickr --langs de en

mkdir -p "$work/bin/raw"
for pair in train:train val:valid test_2016_flickr:test; do
  for l in de en; do cp "$data/${pair%%:*}.$l" "$work/bin/raw/${pair##*:}.$l"; done
done
joint_sentencepiece unigram "$vocab" "$work/bin/raw" "$work/bin/" "$work/bin/spm" de en
binarize "$work/bin" de en
rm -rf "$out"; mkdir -p "$(dirname "$out")"
mv "$work/bin" "$out"
touch "$out/.complete"
echo "prepared $out"
