#!/usr/bin/env bash
# Train the paper's IWSLT'14 de-en model: transformer_iwslt_de_en with R-Drop (alpha 5).
# Usage: train-iwslt14.sh DATA_BIN SAVE_DIR [--baseline] [fairseq-train options...]
#   DATA_BIN: the output of prepare-iwslt14.sh
#   --baseline: alpha = 0, i.e. stock --task translation --criterion label_smoothed_cross_entropy
#   any other option is passed to fairseq-train and overrides the defaults below
#   (e.g. --rdrop-alpha 3, --max-update 1000, --seed 2)
# One GPU with --max-tokens 4096, as in the paper; fp16 on CUDA. The best checkpoint is chosen
# by validation BLEU (beam 5, Moses-detokenized); a json log is written to SAVE_DIR/train.log.
set -euo pipefail
source "$(dirname "$0")/common.sh"
train_setup "$@"
fairseq-train "$data" --user-dir "$USER_DIR" "${method[@]}" --label-smoothing 0.1 \
  --source-lang de --target-lang en --arch transformer_iwslt_de_en --share-all-embeddings \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 --lr 5e-4 \
  --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-7 \
  --weight-decay 1e-4 --dropout 0.3 --max-tokens 4096 --max-update 300000 \
  --eval-bleu --eval-bleu-args '{"beam": 5, "max_len_a": 1.2, "max_len_b": 10}' \
  --eval-bleu-detok moses --eval-bleu-remove-bpe sentencepiece \
  --best-checkpoint-metric bleu --maximize-best-checkpoint-metric \
  --save-dir "$save" --log-format json --log-interval 100 --log-file "$save/train.log" \
  "${DEVICE_FLAGS[@]}" "${extra[@]}"
