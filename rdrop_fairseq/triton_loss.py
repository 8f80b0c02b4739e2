"""The training loss as two Triton kernels, one program per row pair (the maths: docs/loss.md).

Program ``i`` owns row ``i`` (copy 1) and row ``n + i`` (copy 2), fp32 arithmetic for fp16, bf16
and fp32 logits:

- forward: an online log-sum-exp of both rows over the vocabulary in blocks, which also sums the
  logits for the smoothing term; then (α > 0) a second sweep for KL(p₁‖p₂) and KL(p₂‖p₁). It
  keeps four floats per pair for the backward (both log-sum-exps and both KLs) and writes the
  pair's loss, NLL and KL, summed on the device.
- backward: one sweep that writes both rows' logit gradients, ``grad_output`` read from device
  memory and multiplied in fp32 before the rounding to the logits' dtype (an fp16 value beyond
  fp16's range becomes inf, as fairseq's loss scaler expects).

Pairs whose position is not counted (pad, ``--ignore-prefix-size``) are masked inside the kernels
and get a zero gradient, so nothing waits on the host; program ids are int64, so offsets past 2³¹
elements do not wrap. Runs on CPU tensors under ``TRITON_INTERPRET=1`` (set before this module is
imported).
"""

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

#: Largest vocabulary block one step of a program holds (two rows of it, in fp32 registers). The
#: vocabulary size itself is a compile-time constant of the kernels (VOCAB): one compilation per
#: model, and loop bounds the compiler knows.
MAX_BLOCK = 4096


@triton.jit
def _online_logsumexp(running_max, running_sum, x):
    """Running max and Σexp(x − max) of a row, updated with one block ``x`` (−inf where masked)."""
    new_max = tl.maximum(running_max, tl.max(x, 0))
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # a block of only −inf: no NaN
    running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(x - shift), 0)
    return new_max, running_sum


@triton.jit
def _copy_difference(l1, l2):
    """``l₁ − l₂``, 0 where a token is −inf in either copy (or a column is past the vocabulary)."""
    d = l1 - l2
    return tl.where((l1 == float("-inf")) | (l2 == float("-inf")), 0.0, d)


@triton.jit
def _kl_terms(l_this, l_other):
    """``p_this ⊙ (l_this − l_other)``: 0 where ``l_this`` is −inf (p = 0, also past the
    vocabulary), +inf where only ``l_other`` is."""
    terms = tl.where(l_other == float("-inf"), float("inf"), tl.exp(l_this) * (l_this - l_other))
    return tl.where(l_this == float("-inf"), 0.0, terms)


@triton.jit
def _rdrop_forward_kernel(
    logits_ptr,
    row_stride,
    target_ptr,
    keep_ptr,
    stats_ptr,
    saved_ptr,
    n_pairs,
    eps_i,
    nll_weight,
    alpha,
    VOCAB: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    HAS_KL: tl.constexpr,
    SIMCUT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """stats (3, n): per pair the loss, the NLL of both copies and ½[KL(p‖q)+KL(q‖p)] (SIMCUT:
    copy 1's NLL and KL(p‖q)); saved (4, n): per pair log-sum-exp of copy 1 and 2, KL(p‖q),
    KL(q‖p)."""
    pair = tl.program_id(0).to(tl.int64)
    x1_ptr = logits_ptr + pair * row_stride
    x2_ptr = logits_ptr + (pair + n_pairs) * row_stride
    loss = 0.0
    nll = 0.0
    kl = 0.0
    lse1 = 0.0
    lse2 = 0.0
    kl12 = 0.0
    kl21 = 0.0
    if tl.load(keep_ptr + pair) != 0:
        max1 = float("-inf")
        max2 = float("-inf")
        sum_exp1 = 0.0
        sum_exp2 = 0.0
        sum_x = 0.0
        for start in range(0, VOCAB, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < VOCAB
            x1 = tl.load(x1_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32)
            x2 = tl.load(x2_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32)
            max1, sum_exp1 = _online_logsumexp(max1, sum_exp1, x1)
            max2, sum_exp2 = _online_logsumexp(max2, sum_exp2, x2)
            if HAS_SMOOTHING:
                if SIMCUT:
                    sum_x += tl.sum(tl.where(inside, x1, 0.0), 0)
                else:
                    sum_x += tl.sum(tl.where(inside, x1 + x2, 0.0), 0)
        lse1 = max1 + tl.log(sum_exp1)
        lse2 = max2 + tl.log(sum_exp2)
        y = tl.load(target_ptr + pair)
        x1_y = tl.load(x1_ptr + y).to(tl.float32)
        if SIMCUT:
            nll = lse1 - x1_y
            scored_lse = lse1
        else:
            x2_y = tl.load(x2_ptr + y).to(tl.float32)
            nll = (lse1 - x1_y) + (lse2 - x2_y)
            scored_lse = lse1 + lse2
        loss = nll_weight * nll
        if HAS_SMOOTHING:
            loss += eps_i * (VOCAB * scored_lse - sum_x)  # −Σ log p of the scored copies
        if HAS_KL:
            for start in range(0, VOCAB, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                inside = cols < VOCAB
                l1 = tl.load(x1_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32) - lse1
                l2 = tl.load(x2_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32) - lse2
                kl12 += tl.sum(_kl_terms(l1, l2), 0)
                kl21 += tl.sum(_kl_terms(l2, l1), 0)
            if SIMCUT:
                kl = kl12
            else:
                kl = 0.5 * (kl12 + kl21)
            loss += alpha * kl
    tl.store(stats_ptr + pair, loss)
    tl.store(stats_ptr + n_pairs + pair, nll)
    tl.store(stats_ptr + 2 * n_pairs + pair, kl)
    tl.store(saved_ptr + pair, lse1)
    tl.store(saved_ptr + n_pairs + pair, lse2)
    tl.store(saved_ptr + 2 * n_pairs + pair, kl12)
    tl.store(saved_ptr + 3 * n_pairs + pair, kl21)


@triton.jit
def _rdrop_backward_kernel(
    logits_ptr,
    row_stride,
    grad_ptr,
    grad_row_stride,
    target_ptr,
    keep_ptr,
    saved_ptr,
    grad_output_ptr,
    n_pairs,
    eps_i,
    nll_weight,
    p_weight,
    kl_weight,
    VOCAB: tl.constexpr,
    HAS_KL: tl.constexpr,
    SIMCUT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Both rows' gradients in one sweep (docs/loss.md, names as in ``Coefficients``)."""
    pair = tl.program_id(0).to(tl.int64)
    x1_ptr = logits_ptr + pair * row_stride
    x2_ptr = logits_ptr + (pair + n_pairs) * row_stride
    g1_ptr = grad_ptr + pair * grad_row_stride
    g2_ptr = grad_ptr + (pair + n_pairs) * grad_row_stride
    out_dtype = grad_ptr.dtype.element_ty
    if tl.load(keep_ptr + pair) != 0:
        g = tl.load(grad_output_ptr).to(tl.float32)
        p_grad = g * p_weight
        smooth_grad = g * eps_i
        target_grad = g * nll_weight
        kl_grad = g * kl_weight
        y = tl.load(target_ptr + pair)
        lse1 = tl.load(saved_ptr + pair)
        lse2 = tl.load(saved_ptr + n_pairs + pair)
        kl12 = tl.load(saved_ptr + 2 * n_pairs + pair)
        kl21 = tl.load(saved_ptr + 3 * n_pairs + pair)
        # an infinite KL in the loss: g·∞ everywhere in both rows (0 for g = 0), never NaN
        if SIMCUT:
            infinite = kl12 == float("inf")
        else:
            infinite = (kl12 == float("inf")) | (kl21 == float("inf"))
        infinite_grad = tl.where(g == 0.0, 0.0, g * float("inf"))
        for start in range(0, VOCAB, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < VOCAB
            l1 = tl.load(x1_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32) - lse1
            l2 = tl.load(x2_ptr + cols, mask=inside, other=float("-inf")).to(tl.float32) - lse2
            p1 = tl.exp(l1)
            p2 = tl.exp(l2)
            nll_grad = smooth_grad + tl.where(cols == y, target_grad, 0.0)
            grad1 = p_grad * p1 - nll_grad
            if SIMCUT:
                grad2 = tl.zeros([BLOCK], dtype=tl.float32)
            else:
                grad2 = p_grad * p2 - nll_grad
            if HAS_KL:
                d = _copy_difference(l1, l2)
                p_diff = p1 - p2
                if SIMCUT:
                    grad1 += kl_grad * (p1 * (d - kl12))
                    grad2 -= kl_grad * p_diff
                else:
                    grad1 += kl_grad * (p1 * (d - kl12) + p_diff)
                    grad2 -= kl_grad * (p2 * (d + kl21) + p_diff)
                grad1 = tl.where(infinite, infinite_grad, grad1)
                grad2 = tl.where(infinite, infinite_grad, grad2)
            tl.store(g1_ptr + cols, grad1.to(out_dtype), mask=inside)
            tl.store(g2_ptr + cols, grad2.to(out_dtype), mask=inside)
    else:
        for start in range(0, VOCAB, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            zeros = tl.zeros([BLOCK], dtype=out_dtype)
            tl.store(g1_ptr + cols, zeros, mask=cols < VOCAB)
            tl.store(g2_ptr + cols, zeros, mask=cols < VOCAB)


def block_size(vocab):
    """Vocabulary columns per step: the whole row up to :data:`MAX_BLOCK`."""
    return min(MAX_BLOCK, triton.next_power_of_2(vocab))


def _num_warps(block):
    return 8 if block >= 2048 else 4


def evaluate(logits, target, keep, coefficients):
    """``(loss, nll, kl)`` of ``logits`` (2n, V) fp16/bf16/fp32, ``target`` (n,), ``keep`` (n,)
    bool (see :func:`rdrop_fairseq.loss.training_loss`), as fp32 scalars."""
    return TritonTrainingLoss.apply(logits, target, keep, coefficients)


class TritonTrainingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, keep, coefficients):
        c = coefficients
        n, vocab = target.numel(), logits.size(1)
        block = block_size(vocab)
        logits = logits if logits.stride(1) == 1 else logits.contiguous()
        target = target.contiguous()
        keep = keep.contiguous().view(torch.uint8)
        stats = logits.new_empty((3, n), dtype=torch.float32)
        saved = logits.new_empty((4, n), dtype=torch.float32)
        if n:
            _rdrop_forward_kernel[(n,)](
                logits,
                logits.stride(0),
                target,
                keep,
                stats,
                saved,
                n,
                c.smoothing,
                c.nll_weight,
                c.alpha,
                VOCAB=vocab,
                HAS_SMOOTHING=c.smoothing != 0,
                HAS_KL=c.alpha != 0,
                SIMCUT=c.simcut,
                BLOCK=block,
                num_warps=_num_warps(block),
            )
        loss, nll, kl = (row.sum() for row in stats)  # separate tensors, not views of one
        ctx.coefficients, ctx.block = c, block
        ctx.save_for_backward(logits, target, keep, saved)
        ctx.mark_non_differentiable(nll, kl)  # for logging
        return loss, nll, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, *_logging_grads):
        c, block = ctx.coefficients, ctx.block
        logits, target, keep, saved = ctx.saved_tensors
        n = target.numel()
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        if n:
            _rdrop_backward_kernel[(n,)](
                logits,
                logits.stride(0),
                grad,
                grad.stride(0),
                target,
                keep,
                saved,
                grad_loss.float().contiguous(),
                n,
                c.smoothing,
                c.nll_weight,
                c.p_weight,
                c.kl_weight,
                VOCAB=c.vocab,
                HAS_KL=c.alpha != 0,
                SIMCUT=c.simcut,
                BLOCK=block,
                num_warps=_num_warps(block),
            )
        return grad, None, None, None
