# Sourced by the recipes: repository root, python, the plugin's --user-dir, device flags. The
# recipes call the installed commands (fairseq-*, rdrop-*): those beside PYTHON come first on
# PATH; without PYTHON, those of the repository's own .venv (scripts/setup-venv.sh) if there is one.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED_DATA=${SHARED_DATA:-$ROOT/../shared/data}
die() { echo "error: $*" >&2; exit 1; }
if [ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; fi
PYTHON=${PYTHON:-python3}
_python=$(command -v "$PYTHON") || die "no such Python: $PYTHON"
export PATH="$(dirname "$_python"):$PATH"
# fairseq imports --user-dir by the directory's basename: point it at the installed package.
USER_DIR=$("$PYTHON" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("rdrop_fairseq").origin))' 2>/dev/null) \
  || die "rdrop_fairseq is not installed for $PYTHON (run: bash scripts/setup-venv.sh, or pip install . in the repository)"
command -v rdrop-text-pipeline > /dev/null && command -v fairseq-train > /dev/null \
  || die "the rdrop-* and fairseq-* commands are not beside $PYTHON (reinstall: bash scripts/setup-venv.sh)"
if [ "$($PYTHON -c 'import torch; print(int(torch.cuda.is_available()))')" = 1 ]; then
  ON_GPU=1; DEVICE_FLAGS=(--fp16)
else
  ON_GPU=0; DEVICE_FLAGS=(--cpu)
fi
# is_data_bin DIR: DIR was made by a prepare-*.sh recipe (its .complete marker), or by one's own
# fairseq-preprocess: dictionaries and the train and valid splits.
is_data_bin() {
  [ -e "$1/.complete" ] && return 0
  compgen -G "$1/dict.*.txt" > /dev/null && compgen -G "$1/train.*.idx" > /dev/null \
    && compgen -G "$1/valid.*.idx" > /dev/null
}
# train_setup DATA_BIN SAVE_DIR [--baseline] [options...] (a train recipe's arguments): checks
# DATA_BIN, creates SAVE_DIR and sets data, save, method (R-Drop with alpha 5, or with --baseline
# the stock task and criterion) and extra (the remaining fairseq-train options, which override).
train_setup() {
  [ $# -ge 2 ] || die "usage: $0 DATA_BIN SAVE_DIR [--baseline] [fairseq-train options...]"
  data=$1 save=$2; shift 2
  is_data_bin "$data" || die "$data is not a data-bin folder: it needs what fairseq-preprocess" \
    "writes, dict.*.txt and the train and valid splits (*.idx, *.bin); the prepare-*.sh recipes make one"
  method=(--task rdrop_translation --criterion label_smoothed_cross_entropy_rdrop --rdrop-alpha 5)
  extra=()
  local arg
  for arg in "$@"; do
    if [ "$arg" = --baseline ]; then
      method=(--task translation --criterion label_smoothed_cross_entropy)
    else
      extra+=("$arg")
    fi
  done
  mkdir -p "$save"
}
# train_multi30k_run WORK DATA_BIN NAME EPOCHS [train-multi30k.sh options...]: train WORK/NAME
# for EPOCHS epochs, resuming from its checkpoint_last (output in WORK/NAME/stdout.log); when
# done, WORK/NAME/.done holds the options (the experiment reports quote them).
train_multi30k_run() {
  local work=$1 data=$2 name=$3 epochs=$4; shift 4
  mkdir -p "$work/$name"
  echo "$(date +%T) start $name ($epochs epochs): $*"
  bash "$ROOT/examples/translation/train-multi30k.sh" "$data" "$work/$name" --max-epoch "$epochs" "$@" \
    >> "$work/$name/stdout.log" 2>&1 || die "training $name failed: see $work/$name/stdout.log"
  echo "$*" > "$work/$name/.done"
  echo "$(date +%T) done $name"
}
# joint_sentencepiece TYPE VOCAB IN_DIR OUT_PREFIX SPM_PREFIX SRC TGT: learn one sentencepiece
# model of TYPE (bpe or unigram) on IN_DIR/train.{SRC,TGT} (SPM_PREFIX.model) and encode
# IN_DIR/{train,valid,test}.{SRC,TGT} into OUT_PREFIX{train,valid,test}.{SRC,TGT}.
joint_sentencepiece() {
  local type=$1 vocab=$2 in=$3 out=$4 model=$5 src=$6 tgt=$7 split l
  echo "== joint sentencepiece $type ($vocab) on train"
  rdrop-sentencepiece train --model "$model" \
    --vocab-size "$vocab" --model-type "$type" "$in/train.$src" "$in/train.$tgt"
  for split in train valid test; do for l in $src $tgt; do
    rdrop-sentencepiece encode --model "$model.model" \
      --input "$in/$split.$l" --output "$out$split.$l"
  done; done
}
# binarize DIR SRC TGT: fairseq-preprocess DIR/{train,valid,test}.{SRC,TGT} into DIR, one dictionary.
binarize() {
  local log; log=$(mktemp)
  fairseq-preprocess --source-lang "$2" --target-lang "$3" --joined-dictionary \
    --trainpref "$1/train" --validpref "$1/valid" --testpref "$1/test" --destdir "$1" \
    --workers "$(nproc)" > "$log" 2>&1 || { tail -n 20 "$log" >&2; die "fairseq-preprocess failed"; }
  rm -f "$log"
}
# generate_and_score DATA_BIN CHECKPOINT [rdrop-evaluate options...] -- [fairseq-generate options...]:
# decode the test set into CHECKPOINT's name with .test.txt, then score that log with
# rdrop-evaluate --tokenized and the given options (scores also saved as .test.json).
generate_and_score() {
  local data=$1 checkpoint=$2 log=${2%.pt}.test.txt scoring=(); shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do scoring+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  [ -f "$checkpoint" ] || die "no such checkpoint: $checkpoint"
  fairseq-generate "$data" --user-dir "$USER_DIR" --path "$checkpoint" --gen-subset test \
    --remove-bpe sentencepiece --batch-size 128 "${DEVICE_FLAGS[@]}" "$@" > "$log.part"
  mv "$log.part" "$log"
  rdrop-evaluate --generate-log "$log" --tokenized "${scoring[@]}" \
    --save-json "${log%.txt}.json"
}
