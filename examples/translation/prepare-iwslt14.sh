#!/usr/bin/env bash
# IWSLT'14 de-en: fairseq's prepare-iwslt14.sh text pipeline in Python, then fairseq-preprocess.
# Usage: prepare-iwslt14.sh [--orig DIR] [--out DIR] [--bpe-tokens N]
#   --orig: folder with train.tags.de-en.{de,en} and IWSLT14.TED*.de-en.{de,en}.xml (default:
#           download the public de-en.tgz into OUT.orig)
#   --out:  output folder (default data-bin/iwslt14.tokenized.de-en): the binarized data,
#           {train,valid,test}.{de,en} (subword text), tmp/{train,valid,test}.{de,en} (Moses
#           tokenized and lowercased, as fairseq keeps them) and spm.model
#   --bpe-tokens: joint vocabulary size (default 10000; lower it for small samples)
# Subwords: fairseq learns 10 000 subword-nmt merges; here a joint sentencepiece BPE model of
# the same budget is learned on the same tokenized, lowercased train text (decode with
# --remove-bpe sentencepiece).
set -euo pipefail
source "$(dirname "$0")/common.sh"
orig= out=data-bin/iwslt14.tokenized.de-en bpe_tokens=10000
while [ $# -gt 0 ]; do
  case $1 in
    --orig) orig=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bpe-tokens) bpe_tokens=$2; shift 2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
[[ $bpe_tokens =~ ^[1-9][0-9]*$ ]] || die "--bpe-tokens $bpe_tokens: not a positive integer"
[ -e "$out/.complete" ] && { echo "$out already prepared"; exit 0; }
src=de tgt=en lang=de-en
tests=(IWSLT14.TED.dev2010 IWSLT14.TEDX.dev2012 IWSLT14.TED.tst2010 IWSLT14.TED.tst2011
       IWSLT14.TED.tst2012)
if [ -z "$orig" ]; then
  orig=$out.orig/$lang
  url=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz  # fairseq's copy of WIT3's
  if [ ! -e "$out.orig/de-en.tgz.done" ]; then
    echo "downloading $url"
    mkdir -p "$out.orig"
    curl -fL "$url" | tar xz -C "$out.orig" || die "download failed: $url"
    touch "$out.orig/de-en.tgz.done"
  fi
fi
[ -d "$orig" ] || die "--orig $orig: no such directory"
rdrop-check-parallel "$orig" train.tags.$lang --langs $src $tgt
for t in "${tests[@]}"; do for l in $src $tgt; do
  [ -f "$orig/$t.$lang.$l.xml" ] || die "missing file: $orig/$t.$lang.$l.xml"
done; done

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$out.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage tmp=$work/out/tmp
pipeline() { rdrop-text-pipeline "$@"; }

echo "== train: tokenize, lowercase, clean"
for l in $src $tgt; do
  pipeline extract --format tags "$orig/train.tags.$lang.$l" "$stage/train.tags.$l"
  pipeline tokenize --lang $l --lowercase "$stage/train.tags.$l" "$stage/train.tags.tok.$l"
done
# fairseq lowercases after cleaning; lowercasing changes no word count, so the result is the same
pipeline clean --ratio 1.5 --min-len 1 --max-len 175 "$stage/train.tags.tok" $src $tgt \
  "$stage/train.tags.clean"
pipeline split --every 23 "$stage/train.tags.clean" $src $tgt "$tmp/train" "$tmp/valid"

echo "== test: ${tests[*]}"
for t in "${tests[@]}"; do
  for l in $src $tgt; do
    pipeline extract --format xml "$orig/$t.$lang.$l.xml" "$stage/$t.txt.$l"
    pipeline tokenize --lang $l --lowercase "$stage/$t.txt.$l" "$stage/$t.$l"
  done
  [ "$(wc -l < "$stage/$t.$src")" = "$(wc -l < "$stage/$t.$tgt")" ] \
    || die "$orig/$t.$lang.{$src,$tgt}.xml have different numbers of <seg> lines"
done
for l in $src $tgt; do
  for t in "${tests[@]}"; do cat "$stage/$t.$l"; done > "$tmp/test.$l"
done

joint_sentencepiece bpe "$bpe_tokens" "$tmp" "$work/out/" "$work/out/spm" $src $tgt

binarize "$work/out" $src $tgt
rm -rf "$out"
mv "$work/out" "$out"
touch "$out/.complete"
echo "prepared $out"
