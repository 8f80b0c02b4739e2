#!/usr/bin/env bash
# Train the paper's WMT'14 en-de model: transformer_vaswani_wmt_en_de_big with R-Drop (alpha 5).
# Usage: train-wmt14en2de.sh DATA_BIN SAVE_DIR [--baseline] [fairseq-train options...]
#   DATA_BIN: the output of prepare-wmt14en2de.sh
#   --baseline: alpha = 0, i.e. stock --task translation --criterion label_smoothed_cross_entropy
#   any other option is passed to fairseq-train and overrides the defaults below
# Batch size: one update sees GPUs x max-tokens x update-freq tokens. The defaults (4096 x 16)
# are per GPU; to keep the batch of a run on G GPUs when using G' GPUs, set
# --update-freq 16*G/G' (e.g. 8 GPUs x 16 = 4 GPUs x 32 = 1 GPU x 128).
# Epoch checkpoints are kept for eval-wmt14en2de.sh, which averages the last five.
set -euo pipefail
source "$(dirname "$0")/common.sh"
train_setup "$@"
fairseq-train "$data" --user-dir "$USER_DIR" "${method[@]}" --label-smoothing 0.1 \
  --source-lang en --target-lang de --arch transformer_vaswani_wmt_en_de_big \
  --share-all-embeddings --dropout 0.1 --attention-dropout 0.1 --activation-dropout 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 --lr 1e-3 \
  --lr-scheduler inverse_sqrt --warmup-updates 6000 --warmup-init-lr 1e-7 \
  --max-tokens 4096 --update-freq 16 --max-update 300000 \
  --save-dir "$save" --log-format json --log-interval 100 --log-file "$save/train.log" \
  "${DEVICE_FLAGS[@]}" "${extra[@]}"
