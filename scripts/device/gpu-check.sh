#!/usr/bin/env bash
# The whole check on one CUDA machine, at most 6 minutes: the CUDA tests (marker cuda), the loss benchmark
# (N 4096 and 8192 target tokens per copy x V 10k and 40k, fp16 and bf16), the fp16 training-step
# comparison for transformer_iwslt_de_en and transformer_vaswani_wmt_en_de_big (4096 target
# tokens per copy) and 200 fp16 updates of transformer_iwslt_de_en, R-Drop vs baseline.
# Each part has its own time limit, so a slow one cannot eat the others. The benchmark parts run
# benchmarks/run.py and write cuda-*.json|md to $OUT (default benchmarks/results; a dry run's
# default is a temporary folder); the script exits non-zero when a part failed. If fairseq is not
# importable, the plugin and fairseq are first installed from the carried wheels in .whl/
# (fetch-wheels.sh, install.sh). GPU_CHECK_DRY_RUN=1 runs every part once on the CPU at tiny sizes.
# Usage: bash scripts/device/gpu-check.sh   (PYTHON: the Python with the machine's torch)
# On a CUDA machine without network that receives this checkout with the ignored .whl/ carried
# (bash scripts/device/fetch-wheels.sh here first), with a 360 s limit:
#   set -o pipefail; bash scripts/device/gpu-check.sh 2>&1 | tee $OUT/log
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export PYTHONUNBUFFERED=1
dry=${GPU_CHECK_DRY_RUN:-0}
[ "$dry" = 1 ] && out=${OUT:-$(mktemp -d)} || out=${OUT:-$root/benchmarks/results}
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c "import fairseq" 2>/dev/null; then
    . scripts/device/install.sh || exit 1  # the plugin and fairseq from .whl/; its error says why not
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$root  # the tests and benchmarks/ import this checkout

if [ "$dry" = 1 ]; then
    device=cpu sizes=64x512 step_tokens=64 updates=3 repeats=2 step_repeats=1
    model_args="--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 16 --decoder-embed-dim 16
        --encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2
        --decoder-attention-heads 2"
    limit_tests=600 limit_loss=600 limit_step=900
else
    device=cuda sizes="4096x10000 4096x40000 8192x10000 8192x40000" step_tokens=4096 updates=200
    repeats=10 step_repeats=5 model_args=""
    limit_tests=150 limit_loss=50 limit_step=110
fi

failed=()
part() {  # part NAME LIMIT_S COMMAND...: run one part under its time limit, note a failure
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    timeout -k 10 "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start))s"
    [ $rc = 0 ] || failed+=("$name (exit $rc)")
}

"$python" - <<'PY'
import torch, fairseq, rdrop_fairseq
print("torch", torch.__version__, "cuda", torch.version.cuda, "fairseq", fairseq.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null

# every test that needs CUDA (marker cuda): the compiled kernel against float64 (fp32/fp16/bf16),
# fp16/bf16 training through fairseq-train; without a GPU these tests skip. fp16
# training with fairseq's loss scaler is checked by the last part's 200 updates
part tests "$limit_tests" "$python" -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors -m cuda tests
bench=("$python" benchmarks/run.py --device "$device" --threads 1 --max-gb 60 --repeats "$repeats")
for dtype in float16 bfloat16; do
    part "loss $dtype" "$limit_loss" "${bench[@]}" --dtype "$dtype" --archs --loss-sizes $sizes \
        --out "$out/cuda-loss-$dtype.json"
done
part "step float16" "$limit_step" "${bench[@]}" --dtype float16 --loss-sizes \
    --archs transformer_iwslt_de_en transformer_vaswani_wmt_en_de_big --step-tokens "$step_tokens" \
    --step-repeats "$step_repeats" --loss-scale-updates "$updates" --model-args "$model_args" \
    --out "$out/cuda-step-float16.json"

echo "results in $out:"
for f in "$out"/cuda-*.md; do echo "--- $f"; cat "$f"; done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu-check: all parts passed"
