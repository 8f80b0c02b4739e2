"""Symmetric KL between the two dropout copies, computed from log-probabilities.

The R-Drop regulariser is ``½[KL(P‖Q) + KL(Q‖P)] = ½ Σ (p − q)(log p − log q)``, so it needs
only the log-probabilities the NLL already holds. :class:`SymmetricKL` evaluates it and its
gradient in row chunks: between forward and backward it keeps nothing but references to its
inputs, and the only vocabulary-sized tensors it allocates are the gradients it must return.
Arithmetic is fp32 (fp64 for fp64 inputs) whatever the input dtype.
"""

import torch
from torch.autograd.function import once_differentiable

#: Rows per chunk: small enough that a chunk's fp32 temporaries stay in cache, large enough to
#: amortise the per-op overhead (measured fastest on CPU among 8-512 rows at V = 10k).
CHUNK_ROWS = 32


def _chunk_terms(a, b):
    """``exp(a)``, ``exp(b)`` and ``a − b`` of one chunk; ``a − b`` is 0 where both are −inf (a
    token masked in both copies adds nothing, rather than NaN)."""
    return a.exp(), b.exp(), (a - b).nan_to_num_(nan=0.0)


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
            rows = slice(start, start + chunk_rows)
            p, q, diff = _chunk_terms(lp2[rows].to(dtype), lq2[rows].to(dtype))
            total += torch.dot(p.sub_(q).view(-1), diff.view(-1))
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
        grads = [
            torch.empty((lp2.size(0), vocab), dtype=lp.dtype, device=lp.device)
            if ctx.needs_input_grad[i] else None
            for i in (0, 1)
        ]
        half = 0.5 * grad_output.item()
        for start in range(0, lp2.size(0), ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            p, q, diff = _chunk_terms(lp2[rows].to(dtype), lq2[rows].to(dtype))
            p_minus_q = p - q
            for grad, prob, scale in ((grads[0], p, half), (grads[1], q, -half)):
                if grad is not None:
                    grad[rows] = torch.addcmul(p_minus_q, prob, diff).mul_(scale)
        grad_lp, grad_lq = (g.view(lp.shape) if g is not None else None for g in grads)
        return grad_lp, grad_lq, None


def symmetric_kl(lp, lq, chunk_rows=CHUNK_ROWS):
    """Summed ``½[KL(P‖Q) + KL(Q‖P)]`` of two log-probability tensors of the same shape."""
    return SymmetricKL.apply(lp, lq, chunk_rows)
