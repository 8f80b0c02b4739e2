#!/usr/bin/env python
"""Cost of R-Drop: our loss and training step vs the stock criterion and the official formula.

  run.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--out FILE]
         [--loss-sizes NxV ...] [--archs ARCH ...] [--step-tokens T] [--loss-scale-updates U]
         [--model-args "OPTIONS"] [--threads 2] [--repeats R] [--step-repeats R] [--max-gb 12]
         [--json]

1. Loss level (loss.py: the variants, timing, kernel launches; memory.py: peak memory) at each
   --loss-sizes N x V, in --dtype on --device.
2. Training step (train_step.py) of each --archs model with --step-tokens target tokens per copy.
3. Loss scale (loss_scale.py; --loss-scale-updates U, float16 only): U updates of the first
   architecture, baseline and ours.

Results go to a JSON file (``--out``) and a markdown table beside it (report.py); ``--json``
prints the JSON.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from common import ALPHA, EPS, dtype_name
from loss import KL_BASE, LOSS_VARIANTS, time_loss_variants
from loss_scale import loss_scale_run
from machine import machine_info
from memory import estimated_official_peak_gb, peak_memory_mb
from report import write_results
from train_step import ARCH_VOCAB, time_train_steps

FULL_SIZES = [(n, v) for n in (1024, 4096, 16384) for v in (10000, 32000, 40000)]
QUICK_SIZES = [(4096, 10000)]
HEADLINE_SIZE = (4096, 10000)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def loss_row(tokens, vocab, device, dtype, threads, repeats, max_gb):
    row = {"tokens": tokens, "vocab": vocab}
    if estimated_official_peak_gb(tokens, vocab) > max_gb:
        row["skipped"] = (
            f"estimated peak {estimated_official_peak_gb(tokens, vocab):.0f} GB "
            f"> --max-gb {max_gb:g}"
        )
        return row
    row.update(time_loss_variants(tokens, vocab, device, dtype, repeats))
    row["extra_peak_mb"] = peak_memory_mb(tokens, vocab, device, dtype, threads, max_gb)
    overhead, extra = row["kl_overhead_ms"], row["extra_peak_mb"]
    # None where ours adds no measurable time over its own NLL (no ratio to speak of)
    row["kl_speedup_vs_official"] = (
        overhead["official"] / overhead["ours"] if overhead["ours"] > 0 else None
    )
    row["kl_extra_mb"] = {v: extra[v] - extra[base] for v, base in KL_BASE.items()}
    row["kl_extra_memory_vs_official"] = row["kl_extra_mb"]["ours"] / row["kl_extra_mb"]["official"]
    row["loss_ratio_vs_nll"] = {v: row["ms"][v] / row["ms"]["nll"] for v in LOSS_VARIANTS}
    return row


def run_benchmark(
    loss_sizes,
    archs,
    step_tokens,
    device,
    dtype,
    threads,
    repeats,
    step_repeats,
    max_gb,
    loss_scale_updates=0,
    model_args=(),
):
    torch.set_num_threads(threads)
    loss, steps = [], []
    for tokens, vocab in loss_sizes:
        loss.append(loss_row(tokens, vocab, device, dtype, threads, repeats, max_gb))
        print(f"| loss N={tokens} V={vocab}: {json.dumps(loss[-1])}", file=sys.stderr)
    for arch in archs:
        steps.append(time_train_steps(arch, step_tokens, device, dtype, step_repeats, model_args))
        print(f"| step: {json.dumps(steps[-1])}", file=sys.stderr)
    result = {
        "machine": machine_info(device, threads),
        "config": {
            "device": str(device),
            "dtype": dtype_name(dtype),
            "repeats": repeats,
            "step_repeats": step_repeats,
            "alpha": ALPHA,
            "label_smoothing": EPS,
            "max_gb": max_gb,
            "model_args": list(model_args),
        },
        "loss": loss,
        "steps": steps,
    }
    measured = [row for row in loss if "ms" in row]
    if measured:
        headline = next(
            (row for row in measured if (row["tokens"], row["vocab"]) == HEADLINE_SIZE), measured[0]
        )
        result.update(
            {
                "kl_speedup_vs_official": headline["kl_speedup_vs_official"],
                "kl_extra_memory_vs_official": headline["kl_extra_memory_vs_official"],
                "headline_size": {"tokens": headline["tokens"], "vocab": headline["vocab"]},
            }
        )
    if steps:
        result["step_ratio"] = steps[0]["ratio_vs_baseline"]["rdrop"]
        result["official_step_ratio"] = steps[0]["ratio_vs_baseline"]["official"]
    if loss_scale_updates:
        result["loss_scale"] = loss_scale_run(
            archs[0], step_tokens, device, loss_scale_updates, model_args
        )
        print(f"| loss scale: {json.dumps(result['loss_scale'])}", file=sys.stderr)
    return result


def loss_size(text):
    try:
        tokens, vocab = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NxV, e.g. 4096x10000") from None
    if tokens < 1 or vocab < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be >= 1 and V >= 2")
    return tokens, vocab


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=4096, V=10000 only and a step of 2x1024 tokens (under a minute)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON file (a .md goes beside it); default benchmarks/results/"
        "DEVICE.json, DEVICE-quick.json with --quick",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="dtype of the logits; the step's --fp16/--bf16",
    )
    parser.add_argument(
        "--loss-sizes",
        type=loss_size,
        nargs="*",
        metavar="NxV",
        help="loss-level sizes (default: N in 1024 4096 16384 x V in 10000 32000 "
        "40000; 4096x10000 with --quick); none given: no loss level",
    )
    parser.add_argument(
        "--archs",
        nargs="*",
        choices=sorted(ARCH_VOCAB),
        metavar="ARCH",
        default=["transformer_iwslt_de_en"],
        help=f"training-step models, of {', '.join(ARCH_VOCAB)} (default: the first); "
        "none given: no training step",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed loss repeats (default 5, 3 with --quick)"
    )
    parser.add_argument(
        "--step-repeats", type=int, help="timed training-step repeats (default 5, 1 with --quick)"
    )
    parser.add_argument(
        "--max-gb",
        type=float,
        default=12.0,
        help="skip loss sizes whose estimated peak exceeds this",
    )
    parser.add_argument(
        "--step-tokens",
        type=int,
        help="target tokens per copy in the step benchmark (default 2048, 1024 with --quick)",
    )
    parser.add_argument(
        "--loss-scale-updates",
        type=int,
        default=0,
        help="also train the first architecture this many fp16 updates, baseline "
        "and ours, and record fairseq's loss scale (needs --dtype float16)",
    )
    parser.add_argument(
        "--model-args",
        type=shlex.split,
        default=[],
        help="more fairseq-train model options for the step models, e.g. smaller "
        "dimensions for a dry run",
    )
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.loss_scale_updates and (dtype != torch.float16 or not args.archs):
        parser.error("--loss-scale-updates needs --dtype float16 and an architecture (--archs)")
    default_sizes = QUICK_SIZES if args.quick else FULL_SIZES
    result = run_benchmark(
        loss_sizes=default_sizes if args.loss_sizes is None else args.loss_sizes,
        archs=args.archs,
        step_tokens=args.step_tokens or (1024 if args.quick else 2048),
        device=args.device,
        dtype=dtype,
        threads=args.threads,
        repeats=args.repeats or (3 if args.quick else 5),
        step_repeats=args.step_repeats or (1 if args.quick else 5),
        max_gb=args.max_gb,
        loss_scale_updates=args.loss_scale_updates,
        model_args=args.model_args,
    )
    write_results(
        args.out or DEFAULT_OUT / f"{args.device.type}{'-quick' if args.quick else ''}.json", result
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
