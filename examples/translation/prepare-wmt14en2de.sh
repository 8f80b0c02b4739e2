#!/usr/bin/env bash
# WMT'14 en-de: the corpora and Moses steps of fairseq's prepare-wmt14en2de.sh (--icml17 corpora)
# in Python, a joint sentencepiece vocabulary, then fairseq-preprocess.
# Usage: prepare-wmt14en2de.sh [--orig DIR] [--out DIR] [--vocab-size N]
#                              [--train-tok PREFIX] [--valid-tok PREFIX]
#   --orig: the extracted archives (default: download them into OUT.orig); each file is looked
#           up in DIR and in its subfolders (training/, dev/, test-full/):
#             europarl-v7.de-en.{en,de}, commoncrawl.de-en.{en,de}, news-commentary-v9.de-en.{en,de}
#             newstest2013.{en,de} (valid), newstest2014-deen-src.en.sgm, -ref.de.sgm (test)
#   --out:  output folder (default data-bin/wmt14_en_de): the binarized data, the subword text
#           {train,valid,test}.{en,de}, tmp/ (Moses-tokenized text), raw/test.{en,de} (the test
#           set untokenized, the reference for sacreBLEU) and spm.model
#   --vocab-size: joint sentencepiece BPE vocabulary (default 32000; fairseq: 40 000 BPE merges)
#   --train-tok, --valid-tok: use the already Moses-tokenized PREFIX.{en,de} as the train / valid
#           set instead of the official corpora / newstest2013 (e.g. for the partial data in
#           ../shared/data/wmt14-en-de: --train-tok DIR/train-sample.tok --valid-tok DIR/newstest2012.tok)
# Train and valid text: normalize-punctuation, remove-non-printing-char, tokenizer -a; test: the
# <seg> text of the SGML, tokenizer -a. After subword encoding, train and valid are cleaned
# (ratio 1.5, 1-250 tokens), as fairseq does.
set -euo pipefail
source "$(dirname "$0")/common.sh"
orig= out=data-bin/wmt14_en_de vocab=32000 train_tok= valid_tok=
while [ $# -gt 0 ]; do
  case $1 in
    --orig) orig=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --vocab-size) vocab=$2; shift 2 ;;
    --train-tok) train_tok=$2; shift 2 ;;
    --valid-tok) valid_tok=$2; shift 2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
[[ $vocab =~ ^[1-9][0-9]*$ ]] || die "--vocab-size $vocab: not a positive integer"
[ -e "$out/.complete" ] && { echo "$out already prepared"; exit 0; }
src=en tgt=de
corpora=(europarl-v7.de-en commoncrawl.de-en news-commentary-v9.de-en)
if [ -z "$orig" ]; then
  orig=$out.orig
  for url in http://statmt.org/wmt13/training-parallel-europarl-v7.tgz \
             http://statmt.org/wmt13/training-parallel-commoncrawl.tgz \
             http://statmt.org/wmt14/training-parallel-nc-v9.tgz \
             http://statmt.org/wmt14/dev.tgz http://statmt.org/wmt14/test-full.tgz; do
    [ -e "$orig/${url##*/}.done" ] && continue
    echo "downloading $url"
    mkdir -p "$orig"
    curl -fL "$url" | tar xz -C "$orig" || die "download failed: $url"
    touch "$orig/${url##*/}.done"
  done
fi
[ -d "$orig" ] || die "--orig $orig: no such directory"
# find_orig NAME: the path of NAME in $orig or one of its subfolders
find_orig() {
  local path
  for path in "$orig/$1" "$orig"/*/"$1"; do [ -f "$path" ] && { echo "$path"; return; }; done
  die "missing file: $1 (looked in $orig and its subfolders)"
}
# check_pair PREFIX: PREFIX.{en,de} exist, are UTF-8 and have the same number of lines
check_pair() { rdrop-check-parallel "$(dirname "$1")" "$(basename "$1")" --langs $src $tgt; }

train_prefixes=() valid_prefix=
if [ -n "$train_tok" ]; then check_pair "$train_tok"; else
  for c in "${corpora[@]}"; do
    path=$(find_orig "$c.$src"); train_prefixes+=("${path%.$src}"); check_pair "${path%.$src}"
  done
fi
if [ -n "$valid_tok" ]; then check_pair "$valid_tok"; else
  path=$(find_orig newstest2013.$src); valid_prefix=${path%.$src}; check_pair "$valid_prefix"
fi
test_src=$(find_orig newstest2014-deen-src.$src.sgm)
test_ref=$(find_orig newstest2014-deen-ref.$tgt.sgm)

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$out.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage tmp=$work/out/tmp
mkdir -p "$stage" "$tmp" "$work/out/raw"
pipeline() { rdrop-text-pipeline "$@"; }

echo "== train and valid: normalize, tokenize"
for l in $src $tgt; do
  if [ -n "$train_tok" ]; then cp "$train_tok.$l" "$tmp/train.$l"; else
    for prefix in "${train_prefixes[@]}"; do
      pipeline tokenize --lang $l --normalize --aggressive-dash "$prefix.$l" "$stage/corpus.$l"
      cat "$stage/corpus.$l" >> "$tmp/train.$l"
    done
  fi
  if [ -n "$valid_tok" ]; then cp "$valid_tok.$l" "$tmp/valid.$l"; else
    pipeline tokenize --lang $l --normalize --aggressive-dash "$valid_prefix.$l" "$tmp/valid.$l"
  fi
done

echo "== test: newstest2014"
# test_side LANG SGM: the untokenized <seg> text to raw/, the tokenized one to tmp/
test_side() {
  pipeline extract --format xml --keep-apostrophes "$2" "$work/out/raw/test.$1"
  pipeline extract --format xml "$2" "$stage/test.$1"
  pipeline tokenize --lang "$1" --aggressive-dash "$stage/test.$1" "$tmp/test.$1"
}
test_side $src "$test_src"
test_side $tgt "$test_ref"
[ "$(wc -l < "$tmp/test.$src")" = "$(wc -l < "$tmp/test.$tgt")" ] \
  || die "$test_src and $test_ref have different numbers of <seg> lines"

joint_sentencepiece bpe "$vocab" "$tmp" "$stage/bpe." "$work/out/spm" $src $tgt
for split in train valid; do
  pipeline clean --ratio 1.5 --min-len 1 --max-len 250 "$stage/bpe.$split" $src $tgt "$work/out/$split"
done
for l in $src $tgt; do cp "$stage/bpe.test.$l" "$work/out/test.$l"; done

binarize "$work/out" $src $tgt
rm -rf "$out"
mv "$work/out" "$out"
touch "$out/.complete"
echo "prepared $out"
