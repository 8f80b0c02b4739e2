"""Both Triton kernels compiled ahead of time for real GPUs, with no GPU: Triton's compiler and
bundled ptxas (support/kernel_compilation.py). The interpreter of the other Triton tests runs
Python and would not catch what the compiler rejects, nor a kernel that spills registers to local
memory.

The suite compiles a covering subset of the 120 kernels (7 targets × fp16/bf16/fp32, no bf16 on
sm_75, × V = 10 000, 32 000, 40 000 × 2 kernels; ``python tests/support/kernel_compilation.py``
with no options compiles them all):

- every target, at V = 10 000: all three vocabularies use BLOCK = MAX_BLOCK = 4096 and 8 warps, so
  V changes only the trip count of the loops (3, 8 and 10 blocks), which the compiler may unroll;
  in the full run 10 000 is the vocabulary with the most registers for every target, dtype and
  kernel (107–149, against 80–125 at 32 000 and 40 000);
- every dtype on two to four targets (fp16 and bf16 load, convert and store differently; bf16
  only from sm_80), fp32 on sm_120, the full run's most registers (149, backward);
- V = 32 000 and 40 000 once each.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="the Triton loss kernel needs `pip install triton`")

from support import ROOT  # noqa: E402

SCRIPT = ROOT / "tests" / "support" / "kernel_compilation.py"

COVERING = [
    (75, "fp16", 10_000),
    (80, "bf16", 10_000),
    (86, "fp32", 10_000),
    (89, "fp16", 10_000),
    (90, "bf16", 10_000),
    (100, "fp16", 10_000),
    (120, "fp32", 10_000),
    (86, "bf16", 32_000),
    (120, "fp16", 40_000),
]


@pytest.mark.slow
def test_both_kernels_compile_without_spills_on_every_target_dtype_and_vocabulary(tmp_path):
    """18 compilations into an empty cache, in a process without TRITON_INTERPRET (conftest.py
    sets it without a GPU)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile, do not reuse
    configs = ",".join(f"{arch}:{dtype}:{vocab}" for arch, dtype, vocab in COVERING)
    result = subprocess.run(
        [sys.executable, SCRIPT, "--configs", configs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kernels = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    compiled = sorted((k["arch"], k["dtype"], k["vocab"], k["kernel"]) for k in kernels)
    assert compiled == sorted(
        (*config, kernel)
        for config in COVERING
        for kernel in ("_rdrop_forward_kernel", "_rdrop_backward_kernel")
    )
    assert {k["arch"] for k in kernels} == {75, 80, 86, 89, 90, 100, 120}
    assert {k["dtype"] for k in kernels} == {"fp16", "bf16", "fp32"}
    assert {k["vocab"] for k in kernels} == {10_000, 32_000, 40_000}
    spilling = [k for k in kernels if k["local_bytes"] > 0]
    assert not spilling, spilling
    assert all(0 < k["regs"] <= 255 for k in kernels)
