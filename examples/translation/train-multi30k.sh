#!/usr/bin/env bash
# Train a small Transformer on Multi30k de-en with R-Drop (or the stock baseline).
# Usage: train-multi30k.sh DATA_BIN SAVE_DIR [--baseline] [fairseq-train options...]
#   --baseline: stock --task translation --criterion label_smoothed_cross_entropy
#   any other option is passed to fairseq-train and overrides the defaults below
#   (e.g. --rdrop-alpha 3 --dropout 0.2 --max-epoch 10 --max-update 500).
# Keeps the best checkpoint by validation BLEU; a json log is written to SAVE_DIR/train.log.
set -euo pipefail
source "$(dirname "$0")/common.sh"
train_setup "$@"
fairseq-train "$data" --user-dir "$USER_DIR" "${method[@]}" --label-smoothing 0.1 \
  --arch transformer --share-all-embeddings \
  --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 \
  --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 \
  --encoder-attention-heads 4 --decoder-attention-heads 4 --dropout 0.3 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt \
  --warmup-updates 500 --warmup-init-lr 1e-7 --weight-decay 1e-4 --clip-norm 0.0 \
  --max-tokens 2048 --max-epoch 10 --seed 1 --num-workers 0 \
  --eval-bleu --eval-bleu-args '{"beam": 1, "max_len_a": 1.2, "max_len_b": 10}' \
  --eval-bleu-remove-bpe sentencepiece --best-checkpoint-metric bleu \
  --maximize-best-checkpoint-metric --no-epoch-checkpoints \
  --save-dir "$save" --log-format json --log-interval 50 --log-file "$save/train.log" \
  "${DEVICE_FLAGS[@]}" "${extra[@]}"
