"""Compiles both Triton kernels of triton_loss.py ahead of time for NVIDIA targets with Triton's
own compiler and bundled ptxas (no GPU needed) and prints one JSON line per compiled kernel: its
target, dtype, vocabulary, registers and local-memory bytes (``LOCAL``: what the driver reports
as ``n_spills`` × 4; > 0 means the kernel spills registers). Run as a script, in a process where
``TRITON_INTERPRET`` is not set (the interpreter compiles nothing).

  python tests/support/kernel_compilation.py [--archs 75,80,...] [--dtypes fp16,...]
                                             [--vocabs 10000,...] [--configs 90:bf16:32000,...]

Without options: every target × dtype × vocabulary below (bf16 from sm_80), 120 kernels.
``--configs arch:dtype:vocab,...`` compiles only those combinations instead.

triton_loss.py is loaded from its file, without the plugin's ``__init__`` (which imports fairseq
and takes seconds): the kernels only need torch and triton.
"""

import argparse
import importlib.util
import itertools
import json
import os
import pathlib
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_PATH = pathlib.Path(__file__).resolve().parents[2] / "rdrop_fairseq" / "triton_loss.py"
_spec = importlib.util.spec_from_file_location("rdrop_fairseq_triton_loss", _PATH)
triton_loss = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(triton_loss)

ARCHS = (75, 80, 86, 89, 90, 100, 120)
DTYPES = ("fp16", "bf16", "fp32")
VOCABS = (10_000, 32_000, 40_000)
SCALARS = dict(
    target_ptr="*i64",
    keep_ptr="*u8",
    saved_ptr="*fp32",
    n_pairs="i32",
    eps_i="fp32",
    nll_weight="fp32",
    VOCAB="constexpr",
    BLOCK="constexpr",
    HAS_KL="constexpr",
    SIMCUT="constexpr",
)


def sources(dtype, vocab):
    """The forward and backward kernels for ``dtype`` logits at ``vocab``, with every branch of
    R-Drop's loss (label smoothing and KL)."""
    flags = dict(VOCAB=vocab, BLOCK=triton_loss.block_size(vocab), HAS_KL=True, SIMCUT=False)
    forward = ASTSource(
        triton_loss._rdrop_forward_kernel,
        dict(
            SCALARS,
            logits_ptr="*" + dtype,
            row_stride="i64",
            stats_ptr="*fp32",
            alpha="fp32",
            HAS_SMOOTHING="constexpr",
        ),
        dict(flags, HAS_SMOOTHING=True),
    )
    backward = ASTSource(
        triton_loss._rdrop_backward_kernel,
        dict(
            SCALARS,
            logits_ptr="*" + dtype,
            row_stride="i64",
            grad_ptr="*" + dtype,
            grad_row_stride="i64",
            grad_output_ptr="*fp32",
            p_weight="fp32",
            kl_weight="fp32",
        ),
        flags,
    )
    return flags["BLOCK"], (forward, backward)


def resource_usage(cubin):
    """``{"regs": ..., "local_bytes": ...}`` of a cubin, read by the bundled cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [tool, "--dump-resource-usage", f.name], check=True, capture_output=True, text=True
        ).stdout
    found = re.search(r"REG:(\d+) .*LOCAL:(\d+)", out)
    return {"regs": int(found[1]), "local_bytes": int(found[2])}


def combinations(args):
    """``(arch, dtype, vocab)`` to compile: ``--configs``, else the product (bf16 from sm_80)."""
    if args.configs:
        triples = [c.split(":") for c in args.configs.split(",")]
        return [(int(arch), dtype, int(vocab)) for arch, dtype, vocab in triples]
    product = itertools.product(
        map(int, args.archs.split(",")), args.dtypes.split(","), map(int, args.vocabs.split(","))
    )
    return [(a, d, v) for a, d, v in product if not (d == "bf16" and a < 80)]  # bf16: sm_80+


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default=",".join(map(str, ARCHS)))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--vocabs", default=",".join(map(str, VOCABS)))
    parser.add_argument("--configs", help="arch:dtype:vocab,... instead of the product")
    args = parser.parse_args()
    for arch, dtype, vocab in combinations(args):
        block, kernels = sources(dtype, vocab)
        for source in kernels:
            kernel = triton.compile(
                source,
                target=GPUTarget("cuda", arch, 32),
                options=dict(num_warps=triton_loss._num_warps(block)),
            )
            print(
                json.dumps(
                    dict(
                        kernel=source.fn.__name__,
                        arch=arch,
                        dtype=dtype,
                        vocab=vocab,
                        **resource_usage(kernel.asm["cubin"]),
                    )
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
