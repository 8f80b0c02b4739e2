#!/usr/bin/env python
"""Peak memory of one loss-level fwd+bwd (loss.py's variants) above what was allocated before it.

On CUDA in-process, from ``torch.cuda.max_memory_allocated``, reset per variant. On CPU each
variant runs in a process of its own (this file as a script) where glibc gets a fixed mmap
threshold (so RSS follows live memory) and the kernel's peak-RSS mark is reset through
/proc/self/clear_refs. Both include the (2N, V) gradient of the logits, which every variant
allocates.

  memory.py VARIANT N V [--device cpu] [--dtype float32] [--threads 2]
      prints {"extra_bytes": ...}: one variant's extra peak, after one warm-up
"""

import argparse
import gc
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from common import dtype_name
from loss import LOSS_VARIANTS, fwd_bwd, make_logits_and_target

#: (2N, V) fp32 tensors alive at the official variant's peak, logits included (measured 7.4 on CPU);
#: sizes whose estimate exceeds --max-gb are skipped.
OFFICIAL_PEAK_TENSORS = 8


def estimated_official_peak_gb(tokens, vocab):
    return OFFICIAL_PEAK_TENSORS * 2 * tokens * vocab * 4 / 2**30


def proc_status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def extra_peak_bytes(variant, logits, target):
    """Peak memory of one fwd+bwd above what was allocated before it; on CPU the process's RSS,
    so only meaningful in a process of its own."""
    logits.grad = None
    gc.collect()
    device = logits.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        before = proc_status_bytes("VmRSS")
    fwd_bwd(variant, logits, target)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return proc_status_bytes("VmHWM") - before


def worker_extra_peak_bytes(variant, tokens, vocab, device, dtype):
    """``extra_peak_bytes`` after one warm-up, on inputs of the worker process's own."""
    logits, target = make_logits_and_target(tokens, vocab, device, dtype)
    fwd_bwd(variant, logits, target)
    return extra_peak_bytes(variant, logits, target)


def peak_memory_mb(tokens, vocab, device, dtype, threads, max_gb):
    """Extra peak MB of each loss variant: in this process on CUDA; on CPU each in a process of
    its own, run concurrently when one official-sized peak per variant fits in ``max_gb``."""
    if device.type == "cuda":
        logits, target = make_logits_and_target(tokens, vocab, device, dtype)
        return {v: extra_peak_bytes(v, logits, target) / 2**20 for v in LOSS_VARIANTS}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    options = ["--device", str(device), "--dtype", dtype_name(dtype), "--threads", str(threads)]
    commands = [
        [sys.executable, __file__, variant, str(tokens), str(vocab), *options]
        for variant in LOSS_VARIANTS
    ]
    fits = len(commands) * estimated_official_peak_gb(tokens, vocab) <= max_gb
    with ThreadPoolExecutor(len(commands) if fits else 1) as pool:
        runs = list(
            pool.map(lambda c: subprocess.run(c, capture_output=True, env=env, text=True), commands)
        )
    for variant, run in zip(LOSS_VARIANTS, runs):
        if run.returncode != 0:
            raise RuntimeError(
                f"memory worker {variant} N={tokens} V={vocab} failed:\n{run.stderr[-3000:]}"
            )
    return {
        v: json.loads(r.stdout.splitlines()[-1])["extra_bytes"] / 2**20
        for v, r in zip(LOSS_VARIANTS, runs)
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=LOSS_VARIANTS)
    parser.add_argument("tokens", type=int)
    parser.add_argument("vocab", type=int)
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra = worker_extra_peak_bytes(
        args.variant, args.tokens, args.vocab, args.device, getattr(torch, args.dtype)
    )
    print(json.dumps({"extra_bytes": extra}))


if __name__ == "__main__":
    main()
