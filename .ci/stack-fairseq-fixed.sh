#!/usr/bin/env bash
# CI, the "existing fairseq environment" stack: a Python 3.12 venv where fairseq-fixed 0.12.3.1
# was installed first (with the torch pip resolves for it), then the plugin added with a plain
# `pip install <clone>`, as its README says. Checks that this changes none of torch, triton,
# numpy, hydra-core, omegaconf or fairseq*, then that fairseq's own command lines with the
# installed plugin train, resume, generate every test sentence, and train with 2 processes.
# Usage: bash .ci/stack-fairseq-fixed.sh   (PYTHON: a Python 3.12, default python3.12;
#        WORK: folder for the venv and the runs, default a new temporary one;
#        VENV: an existing venv that holds fairseq-fixed and not yet the plugin, to reuse it)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${WORK:-$(mktemp -d -t rdrop-stack-fairseq-fixed.XXXXXX)}
mkdir -p "$work"
cd "$work"  # never the clone: python -c would import the clone's rdrop_fairseq
export OMP_NUM_THREADS=1
start=$SECONDS
step() { echo "[$((SECONDS - start)) s] $*"; }
fail() { echo "error: $*" >&2; exit 1; }

python312() {  # the first Python 3.12 found: $PYTHON, python3.12, pyenv's
    local candidate
    for candidate in ${PYTHON:-} python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    fail "no Python 3.12 found: set PYTHON"
}
venv=${VENV:-$work/venv}
if [ -z "${VENV:-}" ]; then
    python=$(python312)
    step "venv with fairseq-fixed==0.12.3.1 in $venv ($python)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check fairseq-fixed==0.12.3.1
fi
py=$venv/bin/python
"$py" -m pip freeze --all --disable-pip-version-check > freeze-before.txt
step "pip install $root (plain)"
rm -rf "$root/build"  # setuptools' build folder keeps files deleted from the clone since then
"$py" -m pip install -q --disable-pip-version-check "$root"
"$py" -m pip freeze --all --disable-pip-version-check > freeze-after.txt

# -- what the plugin's install changed -------------------------------------------------------
watched='^(torch|triton|numpy|hydra-core|omegaconf|fairseq[a-z0-9_.-]*|ve-fairseq)=='
diff freeze-before.txt freeze-after.txt > freeze.diff || true
echo "pip freeze, before -> after:"
sed -n 's/^[<>] /  &/p' freeze.diff
changed=$(grep -E '^[<>] ' freeze.diff | cut -c3- | grep -iE "$watched" || true)
[ -z "$changed" ] || fail "the plugin's install changed: $(echo $changed)"
grep -qiE '^fairseq-fixed==0\.12\.3\.1$' freeze-after.txt || fail "fairseq-fixed is gone"
"$py" -m pip check --disable-pip-version-check >/dev/null || fail "pip check: $("$py" -m pip check)"

# -- train, resume, generate, 2 processes -------------------------------------------------
step "synthetic corpus"
PYTHONPATH=$root/tests/support "$py" -c \
    'import corpus, pathlib, sys; corpus.write(pathlib.Path(sys.argv[1]))' raw
"$venv/bin/fairseq-preprocess" --source-lang de --target-lang en --trainpref raw/tok/train \
    --validpref raw/tok/valid --testpref raw/tok/test --joined-dictionary --destdir bin \
    --workers 1 > preprocess.log 2>&1 || { tail -5 preprocess.log; fail "fairseq-preprocess"; }
user_dir=$("$py" -c 'import os, rdrop_fairseq; print(os.path.dirname(rdrop_fairseq.__file__))' \
    2> import.log) || { cat import.log; fail "the plugin cannot be imported"; }
case $user_dir in "$root"*) fail "the plugin was imported from the clone, not the install" ;; esac
train=("$venv/bin/fairseq-train" bin --user-dir "$user_dir" --task rdrop_translation
    --criterion label_smoothed_cross_entropy_rdrop --rdrop-alpha 5 --label-smoothing 0.1
    --arch transformer --share-all-embeddings --encoder-layers 1 --decoder-layers 1
    --encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64
    --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2
    --dropout 0.3 --optimizer adam --lr 3e-3 --lr-scheduler inverse_sqrt --warmup-updates 20
    --max-tokens 1024 --seed 1 --cpu --num-workers 0 --no-epoch-checkpoints
    --log-format simple --log-interval 10)
run() {  # run LOG COMMAND...: keep the output, show its end when it fails
    local log=$1; shift
    "$@" > "$log" 2>&1 || { tail -20 "$log"; fail "$(basename "$1") failed, see $work/$log"; }
}
step "train 40 updates"
run train.log "${train[@]}" --save-dir save --max-update 40
step "resume to 80 updates"
run resume.log "${train[@]}" --save-dir save --max-update 80
grep -q "Loaded checkpoint save/checkpoint_last.pt (epoch .* @ 40 updates)" resume.log \
    || fail "the second run did not resume from update 40"
grep -q "| train | .* | num_updates 80 |" resume.log || fail "the resumed run did not reach update 80"
step "generate"
run generate.log "$venv/bin/fairseq-generate" bin --user-dir "$user_dir" \
    --task rdrop_translation --path save/checkpoint_last.pt --gen-subset test --beam 5 \
    --batch-size 8 --cpu
hyps=$(grep -c '^H-' generate.log || true)
[ "$hyps" = "$(wc -l < raw/test.de)" ] || fail "generate: $hyps hypotheses for $(wc -l < raw/test.de) test sentences"
step "2 processes"
run distributed.log "$venv/bin/python" "$root/tests/support/launcher.py" --nproc 2 -- "${train[@]:1}" \
    --save-dir save2 --max-update 20
[ -f save2/checkpoint_last.pt ] || fail "2 processes: no checkpoint_last.pt"
grep -q '^\[rank 1\]' distributed.log || fail "2 processes: no output of rank 1"
step "ok: fairseq-fixed stack ($(grep -iE '^(torch|fairseq-fixed)==' freeze-after.txt | tr '\n' ' '))"
