"""The loss level: fwd+bwd from logits of shape (2N, V) (two stacked, slightly different copies,
generated on the device in the benchmark's dtype, requires_grad) of

  nll        the stock criterion: fairseq's ``LabelSmoothedCrossEntropyCriterion.compute_loss``
             (log_softmax in fp32 + ``label_smoothed_nll_loss``, ε 0.1) on both copies;
  fused_nll  ``rdrop_fairseq.loss.training_loss`` with α = 0 (the same NLL, fused);
  ours       ``training_loss`` with α = 5: what our criterion computes (Triton on CUDA);
  ours_torch ``training_loss`` with α = 5 on its PyTorch backend (on CUDA the figures without
             the Triton kernel; on CPU the same as ours);
  official   fairseq's own ``label_smoothed_cross_entropy_with_rdrop`` criterion's
             ``compute_loss`` (R-Drop's official formula: the NLL plus α·``compute_kl_loss``,
             which normalises the logits twice more and takes two full-size ``kl_div``).

Each variant is warmed up first (Triton compiles on its first call). Times are medians over
interleaved repeats (the order rotates each repeat), by CUDA events on CUDA and the wall clock on
CPU. The KL overhead of each implementation is its cost over its own NLL, as a median over
repeats of the difference measured in the same repeat: ours − fused_nll, official − nll. Kernel
launches per fwd+bwd are counted with torch.profiler on CUDA (device kernels, memory copies and
sets excluded). Peak memory: memory.py.
"""

import statistics

import torch
from common import ALPHA, EPS, seconds_of, synchronize
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.criterions.label_smoothed_cross_entropy_with_rdrop import (
    RdropLabelSmoothedCrossEntropyCriterion,
)
from fairseq.data import Dictionary
from fairseq.models import BaseFairseqModel

from rdrop_fairseq.loss import training_loss

LOSS_VARIANTS = ("nll", "fused_nll", "ours", "ours_torch", "official")
#: the variant each KL implementation's overhead is measured against
KL_BASE = {"ours": "fused_nll", "official": "nll"}
LOSS_WARMUPS = 3


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
    return training_loss(logits, target[:copy_rows], keep, EPS, alpha, backend=backend)


def make_logits_and_target(tokens, vocab, device, dtype, seed=0):
    """Logits (2N, V) of two dropout-like copies (shared part + per-copy noise) and the targets
    of both copies (never the pad symbol), generated on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    shared = torch.randn(tokens, vocab, generator=g, device=device).mul_(2)
    logits = torch.cat(
        [shared + 0.5 * torch.randn(tokens, vocab, generator=g, device=device) for _ in range(2)]
    )
    del shared
    target = torch.randint(Dictionary().nspecial, vocab, (tokens,), generator=g, device=device)
    return logits.to(dtype).requires_grad_(), target.repeat(2)


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
            run = lambda: fwd_bwd(variant, logits, target)  # noqa: B023, E731 (called at once)
            seconds[variant].append(seconds_of(run, device))
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
    return event.device_type == torch.autograd.DeviceType.CUDA and not event.name.startswith(
        ("Memcpy", "Memset")
    )


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
