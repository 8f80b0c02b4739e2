"""Symmetric KL between the two dropout copies, computed from log-probabilities.

The R-Drop regulariser is ``½[KL(P‖Q) + KL(Q‖P)] = ½ Σ (p − q)(log p − log q)``, so it needs
only the log-probabilities the NLL already holds. :class:`SymmetricKL` evaluates it and its
gradient in row chunks: between forward and backward it keeps nothing but references to its
inputs, and the only vocabulary-sized tensors it allocates are the gradients it must return.
Arithmetic is fp32 (fp64 for fp64 inputs) whatever the input dtype.
"""

import torch
from torch.autograd.function import once_differentiable

#: Rows per chunk: amortises per-op overhead while the fp32 temporaries of one chunk stay small.
CHUNK_ROWS = 128


def _log_ratio(a, b):
    """``a − b``, but 0 where ``a == b``: a token masked to −inf in both copies adds 0, not NaN."""
    return (a - b).masked_fill_(a == b, 0.0)


class SymmetricKL(torch.autograd.Function):
    """``½ Σ (exp(lp) − exp(lq)) (lp − lq)`` summed over all elements."""

    @staticmethod
    def forward(ctx, lp, lq, chunk_rows=CHUNK_ROWS):
        if lp.shape != lq.shape:
            raise ValueError(f"shape mismatch: {tuple(lp.shape)} vs {tuple(lq.shape)}")
        dtype = torch.promote_types(lp.dtype, torch.float32)
        lp2, lq2 = lp.reshape(-1, lp.size(-1)), lq.reshape(-1, lq.size(-1))
        total = lp.new_zeros((), dtype=dtype)
        for start in range(0, lp2.size(0), chunk_rows):
            a = lp2[start : start + chunk_rows].to(dtype)
            b = lq2[start : start + chunk_rows].to(dtype)
            total += (a.exp() - b.exp()).mul_(_log_ratio(a, b)).sum()
        ctx.save_for_backward(lp, lq)
        ctx.chunk_rows = chunk_rows
        return total.mul_(0.5)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        # ∂/∂lp = ½ [p (lp − lq) + (p − q)],  ∂/∂lq = −½ [q (lp − lq) + (p − q)]
        lp, lq = ctx.saved_tensors
        dtype = torch.promote_types(lp.dtype, torch.float32)
        vocab = lp.size(-1)
        lp2, lq2 = lp.reshape(-1, vocab), lq.reshape(-1, vocab)
        grad_lp = lp.new_empty(lp.shape) if ctx.needs_input_grad[0] else None
        grad_lq = lq.new_empty(lq.shape) if ctx.needs_input_grad[1] else None
        half = 0.5 * grad_output.to(dtype)
        for start in range(0, lp2.size(0), ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            a, b = lp2[rows].to(dtype), lq2[rows].to(dtype)
            p, q = a.exp(), b.exp()
            diff = _log_ratio(a, b)
            p_minus_q = p - q
            if grad_lp is not None:
                grad_lp.view(-1, vocab)[rows] = p.mul_(diff).add_(p_minus_q).mul_(half)
            if grad_lq is not None:
                grad_lq.view(-1, vocab)[rows] = q.mul_(diff).add_(p_minus_q).mul_(-half)
        return grad_lp, grad_lq, None


def symmetric_kl(lp, lq, chunk_rows=CHUNK_ROWS):
    """Summed ``½[KL(P‖Q) + KL(Q‖P)]`` of two log-probability tensors of the same shape."""
    return SymmetricKL.apply(lp, lq, chunk_rows)
