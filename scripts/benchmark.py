#!/usr/bin/env python
"""Cost of the R-Drop consistency term: our fused, chunked loss vs R-Drop's official formula.

  benchmark.py [--quick] [--json] [--out FILE] [--threads 2] [--device cpu|cuda]
               [--dtype float32|bfloat16|float16] [--repeats R] [--max-gb 12]

1. Loss level: fwd+bwd from logits of shape (2N, V) (two stacked, slightly different copies,
   ``--dtype``, requires_grad) of
     nll       log_softmax in fp32 + fairseq's ``label_smoothed_nll_loss`` (ε 0.1) on both
               copies: what the stock criterion computes;
     fused_nll ``rdrop_fairseq.fused_loss.fused_rdrop_loss`` with α = 0 (the same NLL, fused);
     ours      ``fused_rdrop_loss`` with α = 5: what our criterion computes;
     official  nll + α·``official_kl``: the ``compute_kl_loss`` of dropreg/R-Drop's fairseq code,
               which recomputes log_softmax and softmax of the logits and takes two full-size
               ``kl_div(reduction="none")``.
   Times are medians over interleaved repeats (the order rotates each repeat). The KL overhead of
   each implementation is its cost over its own NLL, as a median over repeats of the difference
   measured in the same repeat: ours − fused_nll, official − nll. (Our whole loss is cheaper than
   the stock NLL alone, so "ours − nll" would be negative.)
   Peak memory: each variant runs in its own process (``--worker``) that allocates the inputs,
   does one warm-up fwd+bwd, and then measures one fwd+bwd. On CPU, glibc gets a fixed mmap
   threshold (so freed tensors go back to the OS and RSS follows live memory), the kernel's
   peak-RSS mark is reset through /proc/self/clear_refs, and the figure is VmHWM − VmRSS
   before the pass; on CUDA it is max_memory_allocated − memory_allocated. Both include the
   (2N, V) gradient of the logits, which every variant allocates. The KL's extra peak is again
   taken over each implementation's own NLL.
2. Training step of fairseq's ``transformer_iwslt_de_en`` (shared vocabulary of 10k, random
   batches of equal-length sentences, Adam): baseline = stock ``label_smoothed_cross_entropy``
   on the doubled batch (the tensor sizes of R-Drop) vs our criterion (α 5) through the
   ``rdrop_translation`` task's ``train_step`` on the un-duplicated batch vs the same with the
   official formula. One model, interleaved repeats, medians.

Results go to a JSON file (``--out``) and a markdown table beside it; ``--json`` prints the JSON.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from fairseq import optim, options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    label_smoothed_nll_loss,
)
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.tasks.translation import TranslationTask

from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterion
from rdrop_fairseq.fused_loss import fused_rdrop_loss
from rdrop_fairseq.sample import duplicate_sample

EPS = 0.1
ALPHA = 5.0
LOSS_VARIANTS = ("nll", "fused_nll", "ours", "official")
#: the variant each KL implementation's overhead is measured against
KL_BASE = {"ours": "fused_nll", "official": "nll"}
STEP_VARIANTS = ("baseline", "rdrop", "official")
FULL_SIZES = [(n, v) for n in (1024, 4096, 16384) for v in (10000, 32000, 40000)]
QUICK_SIZES = [(4096, 10000)]
HEADLINE_SIZE = (4096, 10000)
#: (2N, V) fp32 tensors alive at the official variant's peak, logits included (measured 7.4 on CPU);
#: sizes whose estimate exceeds --max-gb are skipped.
OFFICIAL_PEAK_TENSORS = 8
SENTENCE_LENGTH = 32
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------- losses


def official_kl(logits, pad_mask=None):
    """``compute_kl_loss`` of dropreg/R-Drop (fairseq_src): ½[KL(q‖p) + KL(p‖q)] summed, computed
    from freshly normalised log-probabilities and probabilities of the two halves of ``logits``."""
    net_prob = F.log_softmax(logits.float(), dim=-1)
    net_prob_tec = F.softmax(logits.float(), dim=-1)
    p, q = torch.split(net_prob, net_prob.size(0) // 2, dim=0)
    p_tec, q_tec = torch.split(net_prob_tec, net_prob_tec.size(0) // 2, dim=0)
    p_loss = F.kl_div(p, q_tec, reduction="none")
    q_loss = F.kl_div(q, p_tec, reduction="none")
    if pad_mask is not None:
        p_loss.masked_fill_(pad_mask, 0.0)
        q_loss.masked_fill_(pad_mask, 0.0)
    return (p_loss.sum() + q_loss.sum()) / 2


def loss_of_variant(variant, logits, target, alpha=ALPHA):
    """(total loss, label-smoothed NLL part, KL part) of one loss-level variant."""
    if variant in ("fused_nll", "ours"):
        copy_rows = logits.size(0) // 2
        pairs = torch.arange(2 * copy_rows, device=logits.device).view(2, copy_rows)
        alpha = alpha if variant == "ours" else 0.0
        total, _, kl = fused_rdrop_loss(logits, pairs, target[:copy_rows], EPS, alpha)
        return total, total - alpha * kl, kl
    lprobs = F.log_softmax(logits.float(), dim=-1)
    loss, _ = label_smoothed_nll_loss(lprobs, target, EPS)
    kl = torch.zeros_like(loss) if variant == "nll" else official_kl(logits)
    return loss + alpha * kl, loss, kl


def make_logits_and_target(tokens, vocab, device, dtype, seed=0):
    """Logits (2N, V) of two dropout-like copies (shared part + per-copy noise) and targets."""
    g = torch.Generator().manual_seed(seed)
    shared = 2 * torch.randn(tokens, vocab, generator=g)
    logits = torch.cat([shared + 0.5 * torch.randn(tokens, vocab, generator=g) for _ in range(2)])
    del shared
    target = torch.randint(vocab, (tokens,), generator=g).repeat(2)
    logits = logits.to(device=device, dtype=dtype).requires_grad_()
    return logits, target.to(device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_fwd_bwd(variant, logits, target):
    """Seconds for one fwd+bwd of ``variant``, and its (NLL, KL) values."""
    logits.grad = None
    synchronize(logits.device)
    start = time.perf_counter()
    loss, nll, kl = loss_of_variant(variant, logits, target)
    loss.backward()
    synchronize(logits.device)
    return time.perf_counter() - start, nll.item(), kl.item()


def time_loss_variants(tokens, vocab, device, dtype, repeats):
    """Interleaved fwd+bwd timings of the loss variants on the same inputs."""
    logits, target = make_logits_and_target(tokens, vocab, device, dtype)
    values = {variant: timed_fwd_bwd(variant, logits, target)[1:] for variant in LOSS_VARIANTS}
    seconds = {variant: [] for variant in LOSS_VARIANTS}
    for r in range(repeats):
        shift = r % len(LOSS_VARIANTS)
        for variant in LOSS_VARIANTS[shift:] + LOSS_VARIANTS[:shift]:
            seconds[variant].append(timed_fwd_bwd(variant, logits, target)[0])
    return {
        "ms": {v: 1e3 * statistics.median(s) for v, s in seconds.items()},
        "runs_ms": {v: [round(1e3 * t, 1) for t in s] for v, s in seconds.items()},
        "kl_overhead_ms": {
            v: 1e3 * statistics.median(a - b for a, b in zip(seconds[v], seconds[base]))
            for v, base in KL_BASE.items()
        },
        "nll_value": {v: values[v][0] for v in LOSS_VARIANTS},
        "kl_value": {v: values[v][1] for v in ("ours", "official")},
    }


# ---------------------------------------------------------------------------------------- memory


def proc_status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def extra_peak_bytes_of_one_pass(variant, tokens, vocab, device, dtype):
    """Peak memory of one fwd+bwd above what was allocated before it (run in a worker process)."""
    logits, target = make_logits_and_target(tokens, vocab, device, dtype)
    loss_of_variant(variant, logits, target)[0].backward()  # warm-up
    logits.grad = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        before = proc_status_bytes("VmRSS")
    loss_of_variant(variant, logits, target)[0].backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return proc_status_bytes("VmHWM") - before


def peak_memory_mb(tokens, vocab, device, dtype, threads, max_gb):
    """Extra peak MB of each loss variant, each measured in its own process; the processes run
    concurrently when one official-sized peak per variant fits in ``max_gb``."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    common = ["--device", str(device), "--dtype", str(dtype).split(".")[-1], "--threads", str(threads)]
    commands = [
        [sys.executable, __file__, "--worker", variant, str(tokens), str(vocab), *common]
        for variant in LOSS_VARIANTS
    ]
    fits = len(commands) * estimated_official_peak_gb(tokens, vocab) <= max_gb
    concurrent = len(commands) if fits else 1
    with ThreadPoolExecutor(concurrent) as pool:
        runs = list(pool.map(lambda c: subprocess.run(c, capture_output=True, env=env, text=True), commands))
    for variant, run in zip(LOSS_VARIANTS, runs):
        if run.returncode != 0:
            raise RuntimeError(f"memory worker {variant} N={tokens} V={vocab} failed:\n{run.stderr[-3000:]}")
    return {v: json.loads(r.stdout.splitlines()[-1])["extra_bytes"] / 2**20 for v, r in zip(LOSS_VARIANTS, runs)}


def estimated_official_peak_gb(tokens, vocab):
    return OFFICIAL_PEAK_TENSORS * 2 * tokens * vocab * 4 / 2**30


# ------------------------------------------------------------------------------------ train step


class OfficialFormulaRDropCriterion(LabelSmoothedCrossEntropyRDropCriterion):
    """R-Drop as dropreg/R-Drop's ``forward_reg`` computes it: label-smoothed NLL over all (pad
    included, then masked) positions of the doubled batch plus α·``official_kl``."""

    def forward(self, model, sample, reduce=True):
        sample = duplicate_sample(sample)
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        loss, nll_loss = label_smoothed_nll_loss(
            lprobs.view(-1, lprobs.size(-1)), target.view(-1, 1), self.eps,
            ignore_index=self.padding_idx,
        )
        pad_mask = target[: target.size(0) // 2].unsqueeze(-1).eq(self.padding_idx)
        loss = loss + self.rdrop_alpha * official_kl(net_output[0], pad_mask)
        logging_output = {"loss": loss.data, "nll_loss": nll_loss.data / 2,
                          "ntokens": sample["ntokens"], "sample_size": sample["ntokens"]}
        return loss, sample["ntokens"], logging_output


def build_iwslt_setup(folder, vocab, device, dtype):
    """(task, model, optimizer, criteria by step variant) for ``transformer_iwslt_de_en`` with a
    shared vocabulary of ``vocab`` symbols, built from fairseq-train arguments."""
    dictionary = Dictionary()
    for i in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    for lang in ("de", "en"):
        dictionary.save(str(Path(folder) / f"dict.{lang}.txt"))
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(folder), "--task", "rdrop_translation", "-s", "de", "-t", "en",
        "--criterion", "label_smoothed_cross_entropy_rdrop", "--rdrop-alpha", str(ALPHA),
        "--label-smoothing", str(EPS), "--arch", "transformer_iwslt_de_en",
        "--share-all-embeddings", "--optimizer", "adam", "--lr", "5e-4",
        *(["--cpu"] if device.type == "cpu" else []),
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).to(device=device, dtype=dtype)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters()])
    criteria = {
        "baseline": LabelSmoothedCrossEntropyCriterion(task, False, EPS),
        "rdrop": task.build_criterion(cfg.criterion),
        "official": OfficialFormulaRDropCriterion(task, False, EPS, rdrop_alpha=ALPHA),
    }
    return task, model, optimizer, criteria


def random_batch(dictionary, tokens, device, seed=0):
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
        "net_input": {"src_tokens": src.to(device), "src_lengths": torch.full((bsz,), length, device=device),
                      "prev_output_tokens": prev.to(device)},
        "target": tgt.to(device),
    }


def timed_train_step(variant, task, model, optimizer, criterion, batch):
    """Seconds for one training step (forward, backward, Adam) of ``variant``."""
    synchronize(batch["target"].device)
    start = time.perf_counter()
    optimizer.zero_grad()
    if variant == "baseline":  # the stock task and criterion on the same doubled tensors
        TranslationTask.train_step(task, duplicate_sample(batch), model, criterion, optimizer, 0)
    else:  # rdrop_translation duplicates the batch for the R-Drop criteria
        task.train_step(batch, model, criterion, optimizer, 0)
    optimizer.step()
    synchronize(batch["target"].device)
    return time.perf_counter() - start


def time_train_steps(tokens, vocab, device, dtype, repeats):
    """Interleaved training-step timings of the step variants on one model and one batch."""
    with tempfile.TemporaryDirectory() as folder:
        task, model, optimizer, criteria = build_iwslt_setup(folder, vocab, device, dtype)
    batch = random_batch(task.source_dictionary, tokens, device)
    # warm-up: the model on the doubled batch, i.e. on the tensor sizes of every variant
    timed_train_step("baseline", task, model, optimizer, criteria["baseline"], batch)
    seconds = {variant: [] for variant in STEP_VARIANTS}
    for r in range(repeats):
        for variant in STEP_VARIANTS[r % 3 :] + STEP_VARIANTS[: r % 3]:
            seconds[variant].append(timed_train_step(variant, task, model, optimizer, criteria[variant], batch))
    ms = {v: 1e3 * statistics.median(s) for v, s in seconds.items()}
    return {
        "tokens_per_copy": batch["ntokens"],
        "vocab": vocab,
        "arch": "transformer_iwslt_de_en",
        "ms": ms,
        "runs_ms": {v: [round(1e3 * t) for t in s] for v, s in seconds.items()},
        "ratio_vs_baseline": {v: ms[v] / ms["baseline"] for v in STEP_VARIANTS},
    }


# ---------------------------------------------------------------------------------------- report


def machine_info(device, threads):
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


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


def run_benchmark(loss_sizes, step_tokens, step_vocab, device, dtype, threads, repeats,
                  step_repeats, max_gb):
    torch.set_num_threads(threads)
    loss = []
    for tokens, vocab in loss_sizes:
        loss.append(loss_row(tokens, vocab, device, dtype, threads, repeats, max_gb))
        print(f"| loss N={tokens} V={vocab}: {json.dumps(loss[-1])}", file=sys.stderr)
    step = time_train_steps(step_tokens, step_vocab, device, dtype, step_repeats)
    print(f"| step: {json.dumps(step)}", file=sys.stderr)
    headline = next(
        (row for row in loss if (row["tokens"], row["vocab"]) == HEADLINE_SIZE and "ms" in row),
        next(row for row in loss if "ms" in row),
    )
    return {
        "step_ratio": step["ratio_vs_baseline"]["rdrop"],
        "official_step_ratio": step["ratio_vs_baseline"]["official"],
        "kl_speedup_vs_official": headline["kl_speedup_vs_official"],
        "kl_extra_memory_vs_official": headline["kl_extra_memory_vs_official"],
        "headline_size": {"tokens": headline["tokens"], "vocab": headline["vocab"]},
        "machine": machine_info(device, threads),
        "config": {"device": str(device), "dtype": str(dtype).split(".")[-1], "repeats": repeats,
                   "step_repeats": step_repeats, "alpha": ALPHA, "label_smoothing": EPS,
                   "max_gb": max_gb},
        "loss": loss,
        "step": step,
    }


def markdown(result):
    m, c = result["machine"], result["config"]
    lines = [
        f"R-Drop benchmark: {m['device']} ({m['cpu']}), torch {m['torch']}, {m['threads']} threads, "
        f"{c['dtype']} logits, medians of {c['repeats']} (loss) and {c['step_repeats']} (step) "
        "interleaved repeats.",
        "",
        f"Headline (N={result['headline_size']['tokens']}, V={result['headline_size']['vocab']}): "
        f"KL overhead {result['kl_speedup_vs_official']:.2f}x faster than the official formula, "
        f"extra peak memory {result['kl_extra_memory_vs_official']:.3f}x of it; "
        f"training step R-Drop / baseline = {result['step_ratio']:.3f}.",
        "",
        "Loss level, fwd+bwd from (2N, V) logits; `ours` is the whole R-Drop loss (NLL of both "
        "copies + KL), `nll` the stock criterion's NLL alone; the KL overhead and extra peak "
        "memory of each implementation are taken over its own NLL (ours: `fused_nll`).",
        "",
        "| N | V | nll ms | fused_nll ms | ours ms | official ms | ours / nll | KL ms ours "
        "| KL ms official | KL speedup | nll peak MB | KL extra MB ours | KL extra MB official "
        "| memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["loss"]:
        if "skipped" in row:
            lines.append(f"| {row['tokens']} | {row['vocab']} | skipped: {row['skipped']} |" + " |" * 11)
            continue
        ms, kl, mb, kl_mb = row["ms"], row["kl_overhead_ms"], row["extra_peak_mb"], row["kl_extra_mb"]
        lines.append(
            f"| {row['tokens']} | {row['vocab']} | {ms['nll']:.1f} | {ms['fused_nll']:.1f} "
            f"| {ms['ours']:.1f} | {ms['official']:.1f} | {row['loss_ratio_vs_nll']['ours']:.2f} "
            f"| {kl['ours']:.1f} | {kl['official']:.1f} | {row['kl_speedup_vs_official']:.2f}x "
            f"| {mb['nll']:.0f} | {kl_mb['ours']:.0f} | {kl_mb['official']:.0f} "
            f"| {row['kl_extra_memory_vs_official']:.3f} |"
        )
    step = result["step"]
    lines += [
        "",
        f"Training step, {step['arch']}, V={step['vocab']}, {step['tokens_per_copy']} target tokens "
        "per copy (the baseline runs the doubled batch):",
        "",
        "| step | ms | ratio vs baseline |",
        "|---|---:|---:|",
    ]
    lines += [f"| {v} | {step['ms'][v]:.0f} | {step['ratio_vs_baseline'][v]:.3f} |" for v in STEP_VARIANTS]
    return "\n".join(lines) + "\n"


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
                        help="dtype of the logits (and of the model in the step benchmark)")
    parser.add_argument("--repeats", type=int, help="timed loss repeats (default 5, 3 with --quick)")
    parser.add_argument("--step-repeats", type=int,
                        help="timed training-step repeats (default 5, 1 with --quick)")
    parser.add_argument("--max-gb", type=float, default=12.0,
                        help="skip loss sizes whose estimated peak exceeds this")
    parser.add_argument("--step-tokens", type=int,
                        help="target tokens per copy in the step benchmark (default 2048, 1024 "
                        "with --quick)")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "N", "V"), help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.worker:
        torch.set_num_threads(args.threads)
        variant, tokens, vocab = args.worker[0], int(args.worker[1]), int(args.worker[2])
        extra = extra_peak_bytes_of_one_pass(variant, tokens, vocab, args.device, dtype)
        print(json.dumps({"extra_bytes": extra}))
        return
    result = run_benchmark(
        loss_sizes=QUICK_SIZES if args.quick else FULL_SIZES,
        step_tokens=args.step_tokens or (1024 if args.quick else 2048),
        step_vocab=10000,
        device=args.device,
        dtype=dtype,
        threads=args.threads,
        repeats=args.repeats or (3 if args.quick else 5),
        step_repeats=args.step_repeats or (1 if args.quick else 5),
        max_gb=args.max_gb,
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
