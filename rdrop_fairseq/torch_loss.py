"""The training loss in PyTorch, a few rows at a time (the maths: docs/loss.md).

Both copies' rows of a chunk go through one log-softmax that feeds the NLL, the smoothing and the
KL; between forward and backward nothing is kept but the logits the model produced anyway, and
the vocabulary-sized log-probabilities of the whole batch never exist at once. Arithmetic is fp32
(fp64 for fp64 logits) whatever the logits' dtype.

On the CPU only the counted rows are visited (chosen with ``keep.nonzero()``: no device to wait
for). On a device every row pair is visited and pad pairs are masked (their log-probabilities set
to 0, their gradient to 0), and ``grad_output`` stays a device tensor: the host never waits.
"""

import math

import torch
from torch.autograd.function import once_differentiable

#: Rows of each copy per chunk on CPU: small enough that a chunk's fp32 temporaries stay in cache,
#: large enough to amortise the per-op overhead.
CHUNK_ROWS = 32

#: Bytes of fp32 temporaries one chunk may hold on CUDA, where per-op launch overhead, not cache,
#: decides: thousands of rows per chunk at usual vocabularies.
CUDA_CHUNK_BYTES = 1 << 30

#: Bytes of temporaries per row pair and vocabulary entry: about six fp32 tensors of both rows.
_BYTES_PER_PAIR_ENTRY = 2 * 6 * 4


def cuda_chunk_rows(vocab, budget_bytes=CUDA_CHUNK_BYTES):
    """Row pairs per chunk on CUDA: as many as the temporaries' memory budget allows."""
    return max(CHUNK_ROWS, budget_bytes // (_BYTES_PER_PAIR_ENTRY * vocab))


def evaluate(logits, target, keep, coefficients, masked=None):
    """``(loss, nll, kl)`` of ``logits`` (2n, V), ``target`` (n,), ``keep`` (n,) bool (see
    :func:`rdrop_fairseq.loss.training_loss`). ``masked`` (default: on CUDA): visit every pair
    and mask the pad ones rather than select the counted ones, and keep ``grad_output`` on the
    device; nothing waits for the device."""
    masked = logits.is_cuda if masked is None else masked
    n = target.numel()
    if masked:
        rows, mask = torch.arange(n, device=logits.device), keep
    else:
        rows, mask = keep.nonzero().view(-1), None
        target = target[rows]
    pairs = torch.stack([rows, rows + n])
    chunk_rows = cuda_chunk_rows(logits.size(-1)) if logits.is_cuda else CHUNK_ROWS
    return TorchTrainingLoss.apply(logits, pairs, target, mask, coefficients, chunk_rows)


def _chunk_log_probs(logits, pairs, mask, start, stop, dtype):
    """Log-probabilities of rows ``pairs[0, start:stop]`` (copy 1) stacked on ``pairs[1,
    start:stop]`` (copy 2), 0 in pad pairs where ``mask`` is given; and the rows per copy."""
    chunk = pairs[:, start:stop]
    lprobs = logits.index_select(0, chunk.reshape(-1)).to(dtype).log_softmax(-1)
    if mask is not None:
        lprobs.masked_fill_(~mask[start:stop].repeat(2).unsqueeze(1), 0.0)
    return lprobs, chunk.size(1)


def _finite_difference(diff, simcut):
    """``diff`` = l₁ − l₂ made 0, in place, where a token is −inf in either copy; and per pair
    whether the loss's KL is infinite: a token −inf in one copy only (SimCut: in copy 2 only),
    docs/loss.md."""
    infinite = (diff.isposinf() if simcut else diff.isinf()).any(-1)
    return diff.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), infinite


class TorchTrainingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, pairs, target, mask, coefficients, chunk_rows):
        """``pairs`` (2, m): row indices in copy 1 and, aligned, copy 2 of the pairs to visit,
        ``target`` (m,) theirs; ``mask`` (m,) bool the pairs that count, or None for all."""
        c = coefficients
        dtype = torch.promote_types(logits.dtype, torch.float32)
        nll = logits.new_zeros((), dtype=dtype)
        smooth = logits.new_zeros((), dtype=dtype)
        kl = logits.new_zeros((), dtype=dtype)
        infinite_kl = logits.new_zeros((), dtype=torch.bool)
        # On the CPU the chunks whose log-probabilities hold a −inf (their KL is not finite at
        # first) are evaluated again with _finite_difference: only those, as each op is a parallel
        # region (a busy CPU makes every one of them slow). On a device: every chunk, no sync.
        checked = set()
        for start in range(0, pairs.size(1), chunk_rows):
            lprobs, half = _chunk_log_probs(logits, pairs, mask, start, start + chunk_rows, dtype)
            y = target[start : start + half].unsqueeze(1)
            if c.simcut:  # only the clean copy's NLL counts
                nll -= lprobs[:half].gather(1, y).sum()
            else:
                nll -= lprobs[:half].gather(1, y).sum() + lprobs[half:].gather(1, y).sum()
            if c.smoothing:
                smooth -= (lprobs[:half] if c.simcut else lprobs).sum()
            if c.alpha:
                diff = lprobs[:half] - lprobs[half:]
                if mask is not None:
                    diff, infinite = _finite_difference(diff, c.simcut)
                    infinite_kl |= infinite.any()
                probs = lprobs.exp_()
                if c.simcut:
                    p_term = probs[:half].reshape(-1)
                else:
                    p_term = probs[:half].sub(probs[half:]).view(-1)
                chunk_kl = torch.dot(p_term, diff.view(-1))
                if mask is None and not chunk_kl.isfinite():
                    diff, infinite = _finite_difference(diff, c.simcut)
                    infinite_kl |= infinite.any()
                    chunk_kl = torch.dot(p_term, diff.view(-1))
                    checked.add(start)
                kl += chunk_kl
        if not c.simcut:
            kl.mul_(0.5)
        kl.masked_fill_(infinite_kl, torch.inf)
        loss = c.nll_weight * nll + c.smoothing * smooth + c.alpha * kl
        ctx.save_for_backward(logits, pairs, target, mask)
        ctx.coefficients, ctx.chunk_rows, ctx.checked = c, chunk_rows, checked
        ctx.mark_non_differentiable(nll, kl)  # for logging
        return loss, nll, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_nll, _grad_kl):
        logits, pairs, target, mask = ctx.saved_tensors
        c = ctx.coefficients
        dtype = torch.promote_types(logits.dtype, torch.float32)
        scales = _GradientScales(c, grad_loss, dtype, on_device=mask is not None)
        grad = torch.zeros_like(logits)
        for start in range(0, pairs.size(1), ctx.chunk_rows):
            stop = start + ctx.chunk_rows
            lprobs, half = _chunk_log_probs(logits, pairs, mask, start, stop, dtype)
            diff = infinite = None
            if c.alpha:
                diff = lprobs[:half] - lprobs[half:]
                if mask is not None or start in ctx.checked:
                    diff, infinite = _finite_difference(diff, c.simcut)
            probs = lprobs.exp_()
            y = target[start : start + half].unsqueeze(1)
            first, second = probs[:half], probs[half:]
            if c.simcut:  # copy 2's gradient is the KL's only
                grads = [_copy_gradient(first, second, diff, 1.0, y, scales, simcut=True)]
                grads.append(
                    second.sub_(first).mul_(scales.kl) if c.alpha else torch.zeros_like(second)
                )
            else:
                grads = [
                    _copy_gradient(first, second, diff, 1.0, y, scales),
                    _copy_gradient(second, first, diff, -1.0, y, scales),
                ]
            for copy, row_grad in enumerate(grads):
                if infinite is not None:  # an infinite KL: g·∞ in both rows, never NaN
                    row_grad.masked_fill_(infinite.unsqueeze(1), scales.infinite)
                if mask is not None:
                    row_grad.masked_fill_(~mask[start:stop].unsqueeze(1), 0.0)
                grad.index_copy_(0, pairs[copy, start : start + half], row_grad.to(grad.dtype))
        return grad, None, None, None, None, None


class _GradientScales:
    """The backward's scalars: the coefficients times ``grad_output`` ``g``, a float (CPU) or a
    device tensor (``on_device``: reading it to the host would wait for the device)."""

    def __init__(self, c, grad_loss, dtype, on_device):
        self.on_device = on_device
        self.g = g = grad_loss.to(dtype) if on_device else grad_loss.item()
        self.smoothing, self.nll_weight = c.smoothing, c.nll_weight
        self.kl = c.kl_weight * g
        self.nll = g * c.p_weight  # the label-smoothed NLL's p term
        self.p = self.nll + self.kl  # R-Drop: the KL's p₁ − p₂ term adds to it
        self.infinite = (
            (g * torch.inf).masked_fill_(g == 0, 0.0) if on_device else g * math.inf if g else 0.0
        )  # the gradient of an infinite KL


def _copy_gradient(p, other, diff, sign, y, s, simcut=False):
    """The logit gradient of the copy with probabilities ``p`` (the other's: ``other``), ``diff``
    = l₁ − l₂ (None: α = 0) and ``sign`` +1 for copy 1, −1 for copy 2: its label-smoothed NLL's
    gradient plus the KL's (docs/loss.md)."""
    if diff is None:
        row_grad = p * (s.nll if simcut else s.p)
    else:
        p_diff = p * diff  # p ⊙ (l_this − l_other), up to the sign
        kl_row = p_diff.sum(-1, keepdim=True).mul_(sign)  # KL(p_this ‖ p_other)
        row_grad = p_diff.mul_(sign * s.kl)
        row_grad.addcmul_(p, (s.nll if simcut else s.p) - s.kl * kl_row)
        if simcut:  # SimCut's KL(p₁‖p₂) has no −other term in copy 1's gradient
            pass
        elif s.on_device:
            row_grad.addcmul_(other, s.kl, value=-1.0)
        else:
            row_grad.add_(other, alpha=-s.kl)
    row_grad.sub_(s.g * s.smoothing)
    if s.on_device:
        target_grad = (-s.nll_weight * s.g).expand(y.shape)
    else:
        target_grad = row_grad.new_full(y.shape, -s.g * s.nll_weight)
    return row_grad.scatter_add_(1, y, target_grad)
