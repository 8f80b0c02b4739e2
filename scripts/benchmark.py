#!/usr/bin/env python
"""Cost of R-Drop: our loss and training step vs the stock criterion and the official formula.

  benchmark.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--out FILE]
               [--loss-sizes NxV ...] [--archs ARCH ...] [--step-tokens T]
               [--loss-scale-updates U] [--model-args "OPTIONS"] [--threads 2] [--repeats R]
               [--step-repeats R] [--max-gb 12] [--json]

1. Loss level: fwd+bwd from logits of shape (2N, V) (two stacked, slightly different copies,
   ``--dtype``, generated on ``--device``, requires_grad) of
     nll        the stock criterion: fairseq's ``LabelSmoothedCrossEntropyCriterion.compute_loss``
                (log_softmax in fp32 + ``label_smoothed_nll_loss``, ε 0.1) on both copies;
     fused_nll  ``rdrop_fairseq.fused_loss.rdrop_loss`` with α = 0 (the same NLL, fused);
     ours       ``rdrop_loss`` with α = 5: what our criterion computes (Triton on CUDA);
     ours_torch ``rdrop_loss`` with α = 5 on its PyTorch path (on CUDA the figures before the
                Triton kernel; on CPU the same as ours);
     official   fairseq's own ``label_smoothed_cross_entropy_with_rdrop`` criterion's
                ``compute_loss`` (R-Drop's official formula: the NLL plus α·``compute_kl_loss``,
                which normalises the logits twice more and takes two full-size ``kl_div``).
   Each variant is warmed up first (Triton compiles on its first call). Times are medians over
   interleaved repeats (the order rotates each repeat), by CUDA events on CUDA and the wall clock
   on CPU. The KL overhead of each implementation is its cost over its own NLL, as a median over
   repeats of the difference measured in the same repeat: ours − fused_nll, official − nll.
   Peak memory above what was allocated before one fwd+bwd: on CUDA in-process from
   ``torch.cuda.max_memory_allocated``, reset per variant; on CPU each variant runs in its own
   process (``--worker``) where glibc gets a fixed mmap threshold (so RSS follows live memory)
   and the kernel's peak-RSS mark is reset through /proc/self/clear_refs. Both include the (2N, V)
   gradient of the logits, which every variant allocates. Kernel launches per fwd+bwd are counted
   with torch.profiler on CUDA (device kernels, memory copies and sets excluded).
2. Training step as fairseq-train runs it: fairseq's ``Trainer`` (with float16, fairseq's
   FP16Optimizer and its dynamic loss scaler; with bfloat16, --bf16), Adam, random batches of
   equal-length sentences of ``--step-tokens`` target tokens per copy, one model per architecture
   (vocabulary: ``ARCH_VOCAB``): baseline = the stock task and criterion on the doubled batch (the
   tensor sizes of R-Drop) vs ours (``rdrop_translation`` and our criterion, α 5) vs official
   (fairseq's ``label_smoothed_cross_entropy_with_rdrop``, α 5). One model, interleaved repeats.
3. Loss scale (``--loss-scale-updates U``, float16 only): U updates of the first architecture,
   baseline and ours each from the same initialisation on the same fresh random batches; the
   loss and fairseq's loss scale after every update.

Results go to a JSON file (``--out``) and a markdown table beside it; ``--json`` prints the JSON.
"""

import argparse
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from fairseq import options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.criterions.label_smoothed_cross_entropy_with_rdrop import (
    RdropLabelSmoothedCrossEntropyCriterion,
)
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import BaseFairseqModel
from fairseq.tasks.translation import TranslationTask
from fairseq.trainer import Trainer

import rdrop_fairseq  # noqa: F401  (registers the rdrop_translation task and our criterion)
from rdrop_fairseq.fused_loss import rdrop_loss

EPS = 0.1
ALPHA = 5.0
LOSS_VARIANTS = ("nll", "fused_nll", "ours", "ours_torch", "official")
#: the variant each KL implementation's overhead is measured against
KL_BASE = {"ours": "fused_nll", "official": "nll"}
STEP_VARIANTS = ("baseline", "rdrop", "official")
#: shared vocabulary of each architecture's training-step model (IWSLT14 de-en, WMT14 en-de)
ARCH_VOCAB = {"transformer_iwslt_de_en": 10000, "transformer_vaswani_wmt_en_de_big": 32000}
FULL_SIZES = [(n, v) for n in (1024, 4096, 16384) for v in (10000, 32000, 40000)]
QUICK_SIZES = [(4096, 10000)]
HEADLINE_SIZE = (4096, 10000)
LOSS_WARMUPS = 3
STEP_WARMUPS = 2
#: (2N, V) fp32 tensors alive at the official variant's peak, logits included (measured 7.4 on CPU);
#: sizes whose estimate exceeds --max-gb are skipped.
OFFICIAL_PEAK_TENSORS = 8
SENTENCE_LENGTH = 32
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------- losses


class _Dictionary:
    """What fairseq's criteria ask of a task: the target dictionary (its pad index)."""

    target_dictionary = Dictionary()


#: the model whose normalised output is the log-softmax of the logits it is given
LOGITS_MODEL = BaseFairseqModel()
STOCK = LabelSmoothedCrossEntropyCriterion(_Dictionary(), False, EPS)
OFFICIAL = RdropLabelSmoothedCrossEntropyCriterion(_Dictionary(), False, EPS, rdrop_alpha=ALPHA)


def loss_of_variant(variant, logits, target, alpha=ALPHA):
    """(total loss, label-smoothed NLL of both copies, KL) of one loss-level variant;
    ``target`` holds the (2N,) targets of both copies."""
    copy_rows = logits.size(0) // 2
    if variant == "nll":
        loss, nll = STOCK.compute_loss(LOGITS_MODEL, logits, {"target": target})
        return loss, nll, torch.zeros_like(loss)
    if variant == "official":  # the criterion's alpha is ALPHA
        return OFFICIAL.compute_loss(LOGITS_MODEL, logits, {"target": target[:copy_rows]})
    alpha = 0.0 if variant == "fused_nll" else alpha
    backend = "torch" if variant == "ours_torch" else None  # None: Triton on CUDA
    keep = torch.ones(copy_rows, dtype=torch.bool, device=logits.device)
    return rdrop_loss(logits, target[:copy_rows], keep, EPS, alpha, backend=backend)


def make_logits_and_target(tokens, vocab, device, dtype, seed=0):
    """Logits (2N, V) of two dropout-like copies (shared part + per-copy noise) and the targets
    of both copies (never the pad symbol), generated on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    shared = torch.randn(tokens, vocab, generator=g, device=device).mul_(2)
    logits = torch.cat([shared + 0.5 * torch.randn(tokens, vocab, generator=g, device=device)
                        for _ in range(2)])
    del shared
    target = torch.randint(Dictionary().nspecial, vocab, (tokens,), generator=g, device=device)
    return logits.to(dtype).requires_grad_(), target.repeat(2)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn, device):
    """Seconds ``fn()`` takes: CUDA events on CUDA, the wall clock (after a sync) elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fwd_bwd(variant, logits, target):
    logits.grad = None
    loss, nll, kl = loss_of_variant(variant, logits, target)
    loss.backward()
    return nll, kl


def time_loss_variants(tokens, vocab, device, dtype, repeats):
    """Interleaved fwd+bwd timings of the loss variants on the same inputs, after warm-ups."""
    logits, target = make_logits_and_target(tokens, vocab, device, dtype)
    values = {}
    for variant in LOSS_VARIANTS:
        for _ in range(LOSS_WARMUPS):
            nll, kl = fwd_bwd(variant, logits, target)
        values[variant] = (nll.item(), kl.item())
    seconds = {variant: [] for variant in LOSS_VARIANTS}
    for r in range(repeats):
        shift = r % len(LOSS_VARIANTS)
        for variant in LOSS_VARIANTS[shift:] + LOSS_VARIANTS[:shift]:
            seconds[variant].append(seconds_of(lambda: fwd_bwd(variant, logits, target), device))
    return {
        "ms": {v: 1e3 * statistics.median(s) for v, s in seconds.items()},
        "runs_ms": {v: [round(1e3 * t, 3) for t in s] for v, s in seconds.items()},
        "kl_overhead_ms": {
            v: 1e3 * statistics.median(a - b for a, b in zip(seconds[v], seconds[base]))
            for v, base in KL_BASE.items()
        },
        "nll_value": {v: values[v][0] for v in LOSS_VARIANTS},
        "kl_value": {v: values[v][1] for v in ("ours", "ours_torch", "official")},
        "kernel_launches": {v: kernel_launches(v, logits, target) for v in LOSS_VARIANTS},
    }


def is_kernel(event):
    """Whether a profiler event is a kernel run on the GPU (not a memory copy or set)."""
    return (event.device_type == torch.autograd.DeviceType.CUDA
            and not event.name.startswith(("Memcpy", "Memset")))


def kernel_launches(variant, logits, target):
    """GPU kernels one fwd+bwd of ``variant`` launches (None off CUDA, where it has no meaning)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if logits.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        fwd_bwd(variant, logits, target)
        synchronize(logits.device)
    launches = sum(map(is_kernel, profile.events()))
    return launches if logits.device.type == "cuda" else None


# ---------------------------------------------------------------------------------------- memory


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
    common = ["--device", str(device), "--dtype", str(dtype).split(".")[-1], "--threads", str(threads)]
    commands = [
        [sys.executable, __file__, "--worker", variant, str(tokens), str(vocab), *common]
        for variant in LOSS_VARIANTS
    ]
    fits = len(commands) * estimated_official_peak_gb(tokens, vocab) <= max_gb
    with ThreadPoolExecutor(len(commands) if fits else 1) as pool:
        runs = list(pool.map(lambda c: subprocess.run(c, capture_output=True, env=env, text=True), commands))
    for variant, run in zip(LOSS_VARIANTS, runs):
        if run.returncode != 0:
            raise RuntimeError(f"memory worker {variant} N={tokens} V={vocab} failed:\n{run.stderr[-3000:]}")
    return {v: json.loads(r.stdout.splitlines()[-1])["extra_bytes"] / 2**20 for v, r in zip(LOSS_VARIANTS, runs)}


def estimated_official_peak_gb(tokens, vocab):
    return OFFICIAL_PEAK_TENSORS * 2 * tokens * vocab * 4 / 2**30


def loss_row(tokens, vocab, device, dtype, threads, repeats, max_gb):
    row = {"tokens": tokens, "vocab": vocab}
    if estimated_official_peak_gb(tokens, vocab) > max_gb:
        row["skipped"] = (f"estimated peak {estimated_official_peak_gb(tokens, vocab):.0f} GB "
                          f"> --max-gb {max_gb:g}")
        return row
    row.update(time_loss_variants(tokens, vocab, device, dtype, repeats))
    row["extra_peak_mb"] = peak_memory_mb(tokens, vocab, device, dtype, threads, max_gb)
    overhead, extra = row["kl_overhead_ms"], row["extra_peak_mb"]
    row["kl_speedup_vs_official"] = overhead["official"] / overhead["ours"]
    row["kl_extra_mb"] = {v: extra[v] - extra[base] for v, base in KL_BASE.items()}
    row["kl_extra_memory_vs_official"] = row["kl_extra_mb"]["ours"] / row["kl_extra_mb"]["official"]
    row["loss_ratio_vs_nll"] = {v: row["ms"][v] / row["ms"]["nll"] for v in LOSS_VARIANTS}
    return row


# ------------------------------------------------------------------------------------ train step


def precision_options(dtype):
    return {torch.float16: ["--fp16"], torch.bfloat16: ["--bf16"]}.get(dtype, [])


def build_trainers(folder, arch, device, dtype, model_args=(), seed=1):
    """(dictionary, {step variant: fairseq Trainer}) for one model of ``arch`` with a shared
    vocabulary of ARCH_VOCAB[arch] symbols, configured from fairseq-train's options as the
    training recipes set them."""
    dictionary = Dictionary()
    for i in range(ARCH_VOCAB[arch] - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    for lang in ("de", "en"):
        dictionary.save(str(Path(folder) / f"dict.{lang}.txt"))
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(folder), "--task", "rdrop_translation", "-s", "de", "-t", "en",
        "--criterion", "label_smoothed_cross_entropy_rdrop", "--rdrop-alpha", str(ALPHA),
        "--label-smoothing", str(EPS), "--arch", arch, "--share-all-embeddings",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
        "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000",
        "--warmup-init-lr", "1e-7", "--seed", str(seed), "--distributed-world-size", "1",
        *precision_options(dtype), *model_args,
        # fairseq keeps the flat fp32 copy of fp16 weights on CUDA: on CPU, one copy per weight
        *(["--cpu", "--fp16-no-flatten-grads"] if device.type == "cpu" else []),
    ])
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(seed)
    rdrop_task = tasks.setup_task(cfg.task)
    stock_task = TranslationTask(cfg.task, rdrop_task.src_dict, rdrop_task.tgt_dict)
    model = rdrop_task.build_model(cfg.model)
    setups = {
        "baseline": (stock_task, LabelSmoothedCrossEntropyCriterion(stock_task, False, EPS)),
        "rdrop": (rdrop_task, rdrop_task.build_criterion(cfg.criterion)),
        "official": (stock_task, RdropLabelSmoothedCrossEntropyCriterion(
            stock_task, False, EPS, rdrop_alpha=ALPHA)),
    }
    trainers = {v: Trainer(cfg, task, model, criterion) for v, (task, criterion) in setups.items()}
    return rdrop_task.source_dictionary, trainers


def random_batch(dictionary, tokens, seed=0):
    """A batch of ``tokens`` target tokens in sentences of SENTENCE_LENGTH, without padding."""
    g = torch.Generator().manual_seed(seed)
    bsz = max(1, tokens // SENTENCE_LENGTH)
    length = tokens // bsz
    src = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
    tgt = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
    src[:, -1] = tgt[:, -1] = dictionary.eos()
    prev = torch.cat([torch.full((bsz, 1), dictionary.eos()), tgt[:, :-1]], dim=1)
    return {
        "id": torch.arange(bsz),
        "nsentences": bsz,
        "ntokens": bsz * length,
        "net_input": {"src_tokens": src, "src_lengths": torch.full((bsz,), length),
                      "prev_output_tokens": prev},
        "target": tgt,
    }


def train_step(variant, trainer, batch):
    """One update of fairseq's Trainer; the logging output, None when fp16 overflowed."""
    if variant == "baseline":  # the stock criterion on a batch of R-Drop's tensor sizes
        batch = {**batch, "ntokens": 2 * batch["ntokens"], "nsentences": 2 * batch["nsentences"],
                 "net_input": {k: torch.cat([v, v]) for k, v in batch["net_input"].items()},
                 "target": torch.cat([batch["target"], batch["target"]])}
    elif variant == "official":  # fairseq's criterion doubles net_input in place: give it a copy
        batch = {**batch, "net_input": dict(batch["net_input"])}
    return trainer.train_step([batch])


def loss_scale(trainer):
    scaler = getattr(trainer.optimizer, "scaler", None)
    return None if scaler is None else float(scaler.loss_scale)


def step_peak_bytes(variant, trainer, batch):
    """Peak GPU memory of one training step."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    train_step(variant, trainer, batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def time_train_steps(arch, tokens, device, dtype, repeats, model_args=()):
    """Interleaved training-step timings of the step variants on one model and one batch."""
    with tempfile.TemporaryDirectory() as folder:
        dictionary, trainers = build_trainers(folder, arch, device, dtype, model_args)
    batch = random_batch(dictionary, tokens)
    for variant in STEP_VARIANTS:
        for _ in range(STEP_WARMUPS):
            train_step(variant, trainers[variant], batch)
    seconds = {variant: [] for variant in STEP_VARIANTS}
    overflows = {variant: 0 for variant in STEP_VARIANTS}
    for r in range(repeats):
        for variant in STEP_VARIANTS[r % 3 :] + STEP_VARIANTS[: r % 3]:
            out = []
            seconds[variant].append(seconds_of(
                lambda: out.append(train_step(variant, trainers[variant], batch)), device))
            overflows[variant] += out[0] is None
    ms = {v: 1e3 * statistics.median(s) for v, s in seconds.items()}
    return {
        "arch": arch,
        "tokens_per_copy": batch["ntokens"],
        "vocab": len(dictionary),
        "precision": str(dtype).split(".")[-1],
        "ms": ms,
        "runs_ms": {v: [round(1e3 * t, 2) for t in s] for v, s in seconds.items()},
        "ratio_vs_baseline": {v: ms[v] / ms["baseline"] for v in STEP_VARIANTS},
        "overflowed_steps": overflows,
        "peak_gpu_mb": ({v: step_peak_bytes(v, trainers[v], batch) / 2**20 for v in STEP_VARIANTS}
                        if device.type == "cuda" else None),
    }


def loss_scale_run(arch, tokens, device, updates, model_args=()):
    """``updates`` fp16 updates of baseline and ours, each from the same initialisation on the
    same random batches: the loss (None where fp16 overflowed) and loss scale after each."""
    runs = {}
    for variant in ("baseline", "rdrop"):
        with tempfile.TemporaryDirectory() as folder:
            dictionary, trainers = build_trainers(folder, arch, device, torch.float16, model_args)
        trainer = trainers[variant]
        losses, scales = [], []
        for update in range(updates):
            out = train_step(variant, trainer, random_batch(dictionary, tokens, seed=update))
            losses.append(None if out is None else float(out["loss"]))
            scales.append(loss_scale(trainer))
        runs[variant] = {"loss": losses, "loss_scale": scales}
        del trainers, trainer
        gc.collect()
    halvings = [math.log2(b / r) for b, r in zip(runs["baseline"]["loss_scale"], runs["rdrop"]["loss_scale"])]
    return {
        "arch": arch,
        "tokens_per_copy": random_batch(dictionary, tokens)["ntokens"],
        "vocab": len(dictionary),
        "updates": updates,
        "runs": runs,
        "losses_finite": {v: all(x is None or math.isfinite(x) for x in r["loss"])
                          and any(x is not None for x in r["loss"]) for v, r in runs.items()},
        "overflows": {v: sum(x is None for x in r["loss"]) for v, r in runs.items()},
        "final_loss": {v: next((x for x in reversed(r["loss"]) if x is not None), None)
                       for v, r in runs.items()},
        "final_loss_scale": {v: r["loss_scale"][-1] for v, r in runs.items()},
        "max_halvings_below_baseline": max(halvings),
    }


# ---------------------------------------------------------------------------------------- report


def machine_info(device, threads):
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    return info


def run_benchmark(loss_sizes, archs, step_tokens, device, dtype, threads, repeats, step_repeats,
                  max_gb, loss_scale_updates=0, model_args=()):
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
        "config": {"device": str(device), "dtype": str(dtype).split(".")[-1], "repeats": repeats,
                   "step_repeats": step_repeats, "alpha": ALPHA, "label_smoothing": EPS,
                   "max_gb": max_gb, "model_args": list(model_args)},
        "loss": loss,
        "steps": steps,
    }
    measured = [row for row in loss if "ms" in row]
    if measured:
        headline = next((row for row in measured if (row["tokens"], row["vocab"]) == HEADLINE_SIZE),
                        measured[0])
        result.update({
            "kl_speedup_vs_official": headline["kl_speedup_vs_official"],
            "kl_extra_memory_vs_official": headline["kl_extra_memory_vs_official"],
            "headline_size": {"tokens": headline["tokens"], "vocab": headline["vocab"]},
        })
    if steps:
        result["step_ratio"] = steps[0]["ratio_vs_baseline"]["rdrop"]
        result["official_step_ratio"] = steps[0]["ratio_vs_baseline"]["official"]
    if loss_scale_updates:
        result["loss_scale"] = loss_scale_run(archs[0], step_tokens, device, loss_scale_updates, model_args)
        print(f"| loss scale: {json.dumps(result['loss_scale'])}", file=sys.stderr)
    return result


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def markdown(result):
    """The result as markdown; also reads the results of earlier versions (one ``step``)."""
    m, c = result["machine"], result["config"]
    steps = result.get("steps", [result["step"]] if "step" in result else [])
    lines = [
        f"R-Drop benchmark: {m['device']} ({m['cpu']}), torch {m['torch']}, {m['threads']} threads, "
        f"{c['dtype']} logits, medians of {c['repeats']} (loss) and {c['step_repeats']} (step) "
        "interleaved repeats.",
        "",
    ]
    if "headline_size" in result or "step_ratio" in result:
        headline = []
        if "headline_size" in result:
            headline.append(
                f"at N={result['headline_size']['tokens']}, V={result['headline_size']['vocab']} "
                f"the KL overhead is {result['kl_speedup_vs_official']:.2f}x faster than the "
                f"official formula's, its extra peak memory {result['kl_extra_memory_vs_official']:.3f}x of it")
        if "step_ratio" in result:
            headline.append(f"training step R-Drop / baseline = {result['step_ratio']:.3f}")
        lines += ["Headline: " + "; ".join(headline) + ".", ""]
    if result["loss"]:
        lines += [
            "Loss level, fwd+bwd from (2N, V) logits; `ours` is the whole R-Drop loss (NLL of both "
            "copies + KL), `nll` the stock criterion's NLL alone; the KL overhead and extra peak "
            "memory of each implementation are taken over its own NLL (ours: `fused_nll`); "
            "`ours_torch` is ours on its PyTorch path; launches: GPU kernels per fwd+bwd.",
            "",
            "| N | V | nll ms | fused_nll ms | ours ms | ours_torch ms | official ms | ours / nll "
            "| KL ms ours | KL ms official | KL speedup | nll peak MB | KL extra MB ours "
            "| KL extra MB official | memory ratio | launches nll / ours / ours_torch / official |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    for row in result["loss"]:
        if "skipped" in row:
            lines.append(f"| {row['tokens']} | {row['vocab']} | skipped: {row['skipped']} |" + " |" * 13)
            continue
        ms, kl, mb, kl_mb = row["ms"], row["kl_overhead_ms"], row["extra_peak_mb"], row["kl_extra_mb"]
        launches = row.get("kernel_launches", {})
        lines.append(
            f"| {row['tokens']} | {row['vocab']} | {ms['nll']:.2f} | {ms['fused_nll']:.2f} "
            f"| {ms['ours']:.2f} | {fmt(ms.get('ours_torch'), '.2f')} | {ms['official']:.2f} "
            f"| {row['loss_ratio_vs_nll']['ours']:.2f} | {kl['ours']:.2f} | {kl['official']:.2f} "
            f"| {row['kl_speedup_vs_official']:.2f}x | {mb['nll']:.0f} | {kl_mb['ours']:.0f} "
            f"| {kl_mb['official']:.0f} | {row['kl_extra_memory_vs_official']:.3f} "
            f"| {' / '.join(fmt(launches.get(v), 'd') for v in ('nll', 'ours', 'ours_torch', 'official'))} |"
        )
    for step in steps:
        lines += [
            "",
            f"Training step, {step['arch']}, V={step['vocab']}, {step['tokens_per_copy']} target "
            f"tokens per copy, {step.get('precision', c['dtype'])} (the baseline runs the doubled batch):",
            "",
            "| step | ms | ratio vs baseline |",
            "|---|---:|---:|",
        ]
        lines += [f"| {v} | {step['ms'][v]:.1f} | {step['ratio_vs_baseline'][v]:.3f} |" for v in STEP_VARIANTS]
    if "loss_scale" in result:
        s = result["loss_scale"]
        lines += [
            "",
            f"fp16 loss scale, {s['arch']}, V={s['vocab']}, {s['tokens_per_copy']} target tokens "
            f"per copy, {s['updates']} updates from the same initialisation on the same batches: "
            f"at most {s['max_halvings_below_baseline']:g} halvings below the baseline's.",
            "",
            "| run | losses finite | overflows | final loss | final loss scale |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [f"| {v} | {s['losses_finite'][v]} | {s['overflows'][v]} "
                  f"| {fmt(s['final_loss'][v], '.3f')} | {fmt(s['final_loss_scale'][v], 'g')} |"
                  for v in s["runs"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- cli


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
    parser.add_argument("--quick", action="store_true",
                        help="N=4096, V=10000 only and a step of 2x1024 tokens (under a minute)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--out", type=Path,
                        help="JSON file (a .md goes beside it); default benchmarks/results/"
                        "DEVICE.json, DEVICE-quick.json with --quick")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="dtype of the logits; the step's --fp16/--bf16")
    parser.add_argument("--loss-sizes", type=loss_size, nargs="*", metavar="NxV",
                        help="loss-level sizes (default: N in 1024 4096 16384 x V in 10000 32000 "
                        "40000; 4096x10000 with --quick); none given: no loss level")
    parser.add_argument("--archs", nargs="*", choices=sorted(ARCH_VOCAB), metavar="ARCH",
                        default=["transformer_iwslt_de_en"],
                        help=f"training-step models, of {', '.join(ARCH_VOCAB)} (default: the first); "
                        "none given: no training step")
    parser.add_argument("--repeats", type=int, help="timed loss repeats (default 5, 3 with --quick)")
    parser.add_argument("--step-repeats", type=int,
                        help="timed training-step repeats (default 5, 1 with --quick)")
    parser.add_argument("--max-gb", type=float, default=12.0,
                        help="skip loss sizes whose estimated peak exceeds this")
    parser.add_argument("--step-tokens", type=int,
                        help="target tokens per copy in the step benchmark (default 2048, 1024 "
                        "with --quick)")
    parser.add_argument("--loss-scale-updates", type=int, default=0,
                        help="also train the first architecture this many fp16 updates, baseline "
                        "and ours, and record fairseq's loss scale (needs --dtype float16)")
    parser.add_argument("--model-args", type=shlex.split, default=[],
                        help="more fairseq-train model options for the step models, e.g. smaller "
                        "dimensions for a dry run")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "N", "V"), help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.worker:
        torch.set_num_threads(args.threads)
        variant, tokens, vocab = args.worker[0], int(args.worker[1]), int(args.worker[2])
        extra = worker_extra_peak_bytes(variant, tokens, vocab, args.device, dtype)
        print(json.dumps({"extra_bytes": extra}))
        return
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.loss_scale_updates and (dtype != torch.float16 or not args.archs):
        parser.error("--loss-scale-updates needs --dtype float16 and an architecture (--archs)")
    result = run_benchmark(
        loss_sizes=args.loss_sizes if args.loss_sizes is not None else (QUICK_SIZES if args.quick else FULL_SIZES),
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
    out = args.out or DEFAULT_OUT / f"{args.device.type}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"| wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
