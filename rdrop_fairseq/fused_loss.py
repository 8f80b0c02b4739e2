"""The whole R-Drop training loss computed from the logits in row chunks, with its gradient.

For fairseq's usual output layer (normalised output = log-softmax of the logits) the R-Drop loss —
label-smoothed NLL of both copies plus α·½Σ(p−q)(log p−log q) — and its gradient with respect to
the logits are evaluated a few rows at a time: the vocabulary-sized log-probabilities are never
materialised, only non-pad rows are touched, and between forward and backward nothing is kept but
the logits the model produced anyway. With one log-softmax per chunk feeding both the NLL and the
KL, the loss head costs about what the stock criterion's does, so R-Drop's price is the second
pass through the model and nothing more. Arithmetic is fp32 (fp64 for fp64 logits) whatever the
logits' dtype.

Gradient per row, with ``l = log p``, ``d = l₁ − l₂``, ``a = 1 − ε − εᵢ``, ``εᵢ = ε/(V−1)``:
``∂/∂x₁ = (a + εᵢV) p₁ − εᵢ − a·onehot(y) + ½α[p₁ ⊙ (d − KL(p₁‖p₂)) + p₁ − p₂]`` (copy 2 alike).

``simcut=True`` computes SimCut's loss instead (Gao et al., 2022): the label-smoothed NLL of copy 1
(the clean one) + α·KL(p₁‖p₂), with ``∂/∂x₁ = (a + εᵢV) p₁ − εᵢ − a·onehot(y) + α p₁ ⊙ (d −
KL(p₁‖p₂))`` and ``∂/∂x₂ = α(p₂ − p₁)``.

:func:`rdrop_loss` is the entry point: on CUDA with Triton installed it runs the same maths as
one Triton program per row pair (``triton_loss.py``), pad rows masked on the device; otherwise this
PyTorch function over the counted rows.
"""

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


def _chunk_log_probs(logits, pairs, start, stop, dtype):
    """Log-probabilities of rows ``pairs[0, start:stop]`` (copy 1) stacked on ``pairs[1,
    start:stop]`` (copy 2), and the number of rows per copy."""
    chunk = pairs[:, start:stop]
    return logits.index_select(0, chunk.reshape(-1)).to(dtype).log_softmax(-1), chunk.size(1)


def _copy_difference(lprobs, half):
    """``l₁ − l₂``, 0 where a token is −inf in both copies (it adds nothing rather than NaN)."""
    return (lprobs[:half] - lprobs[half:]).nan_to_num_(nan=0.0)


class FusedRDropLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, logits, pairs, target, epsilon, alpha, chunk_rows=CHUNK_ROWS, device_scalar=None,
        simcut=False,
    ):
        """``logits``: (rows, V); ``pairs``: (2, m) row indices of the m non-pad target positions
        in copy 1 and, aligned, in copy 2; ``target``: (m,). Returns the summed loss, the summed
        NLL of both copies and the summed symmetric KL (the last two for logging only; with
        ``simcut``, copy 1's NLL and KL(p₁‖p₂)).
        ``device_scalar`` (default: on CUDA): the backward keeps ``grad_output`` a tensor rather
        than reading it to the host, which would wait for the device."""
        dtype = torch.promote_types(logits.dtype, torch.float32)
        eps_i = epsilon / (logits.size(-1) - 1)
        nll = logits.new_zeros((), dtype=dtype)
        smooth = logits.new_zeros((), dtype=dtype)
        kl = logits.new_zeros((), dtype=dtype)
        for start in range(0, pairs.size(1), chunk_rows):
            lprobs, half = _chunk_log_probs(logits, pairs, start, start + chunk_rows, dtype)
            y = target[start : start + half].unsqueeze(1)
            if simcut:  # only the clean copy's NLL counts
                nll -= lprobs[:half].gather(1, y).sum()
            else:
                nll -= lprobs[:half].gather(1, y).sum() + lprobs[half:].gather(1, y).sum()
            if eps_i:
                smooth -= (lprobs[:half] if simcut else lprobs).sum()
            if alpha:
                diff = _copy_difference(lprobs, half)
                probs = lprobs.exp_()
                if simcut:
                    kl += torch.dot(probs[:half].reshape(-1), diff.view(-1))
                else:
                    kl += torch.dot(probs[:half].sub(probs[half:]).view(-1), diff.view(-1))
        if not simcut:
            kl.mul_(0.5)
        loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth + alpha * kl
        ctx.save_for_backward(logits, pairs, target)
        ctx.epsilon, ctx.alpha, ctx.chunk_rows, ctx.simcut = epsilon, alpha, chunk_rows, simcut
        ctx.device_scalar = logits.is_cuda if device_scalar is None else device_scalar
        ctx.mark_non_differentiable(nll, kl)
        return loss, nll, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_nll, _grad_kl):
        logits, pairs, target = ctx.saved_tensors
        dtype = torch.promote_types(logits.dtype, torch.float32)
        vocab = logits.size(-1)
        g = grad_loss.to(dtype) if ctx.device_scalar else grad_loss.item()
        eps_i = ctx.epsilon / (vocab - 1)
        a = 1.0 - ctx.epsilon - eps_i
        half_alpha = 0.5 * ctx.alpha * g
        nll_coef = g * (a + eps_i * vocab)  # the label-smoothed NLL's p term
        p_coef = nll_coef + half_alpha
        alpha_g = g * ctx.alpha
        grad = torch.zeros_like(logits)
        for start in range(0, pairs.size(1), ctx.chunk_rows):
            lprobs, half = _chunk_log_probs(logits, pairs, start, start + ctx.chunk_rows, dtype)
            diff = _copy_difference(lprobs, half) if ctx.alpha else None
            probs = lprobs.exp_()
            y = target[start : start + half].unsqueeze(1)
            if ctx.simcut:  # copy 1: the NLL's and KL(p₁‖p₂)'s gradient; copy 2: the KL's only
                clean, cut = probs[:half], probs[half:]
                if ctx.alpha:
                    p_diff = clean * diff  # p₁ ⊙ (l₁ − l₂)
                    kl_row = p_diff.sum(-1, keepdim=True)  # KL(p₁‖p₂)
                    row_grad = p_diff.mul_(alpha_g).addcmul_(clean, nll_coef - alpha_g * kl_row)
                    cut_grad = cut.sub_(clean).mul_(alpha_g)
                else:
                    row_grad, cut_grad = clean * nll_coef, torch.zeros_like(cut)
                _add_smoothed_nll_gradient(row_grad, y, g, a, eps_i, ctx.device_scalar)
                grad.index_copy_(0, pairs[0, start : start + half], row_grad.to(grad.dtype))
                grad.index_copy_(0, pairs[1, start : start + half], cut_grad.to(grad.dtype))
                continue
            for copy, sign in ((0, 1.0), (1, -1.0)):
                p = probs[copy * half : (copy + 1) * half]
                if ctx.alpha:
                    other = probs[(1 - copy) * half : (2 - copy) * half]
                    p_diff = p * diff  # p ⊙ (l_this − l_other), up to the sign
                    kl_row = p_diff.sum(-1, keepdim=True).mul_(sign)  # KL(p_this ‖ p_other)
                    row_grad = p_diff.mul_(sign * half_alpha)
                    row_grad.addcmul_(p, p_coef - half_alpha * kl_row)
                    if ctx.device_scalar:
                        row_grad.addcmul_(other, half_alpha, value=-1.0)
                    else:
                        row_grad.add_(other, alpha=-half_alpha)
                else:
                    row_grad = p * p_coef
                _add_smoothed_nll_gradient(row_grad, y, g, a, eps_i, ctx.device_scalar)
                grad.index_copy_(0, pairs[copy, start : start + half], row_grad.to(grad.dtype))
        return grad, None, None, None, None, None, None, None


def _add_smoothed_nll_gradient(row_grad, y, g, a, eps_i, device_scalar):
    """``row_grad −= g·εᵢ + g·a·onehot(y)``: the label-smoothed NLL's gradient beside its ``p``
    term, with ``g`` a device tensor (``device_scalar``) or a float."""
    row_grad.sub_(g * eps_i)
    target_grad = (-a * g).expand(y.shape) if device_scalar else row_grad.new_full(y.shape, -g * a)
    row_grad.scatter_add_(1, y, target_grad)


def rdrop_loss(logits, target, keep, epsilon, alpha, backend=None, simcut=False):
    """R-Drop loss of a log-softmax output layer straight from ``logits`` (2n, V), rows [0, n)
    copy 1 and [n, 2n) copy 2 aligned, with copy 1's targets ``target`` (n,) and ``keep`` (n,),
    the positions to count: ``(loss, nll_loss, kl_loss)``, the summed label-smoothed NLL of both
    copies + α·½Σ(p−q)(log p − log q), and for logging the summed NLL and symmetric KL.
    ``simcut``: SimCut's loss instead, copy 1's label-smoothed NLL + α·KL(p‖q) (and for logging
    copy 1's NLL and that KL).

    ``backend``: ``"triton"`` (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), ``"torch"``
    (this module's function over ``keep.nonzero()``), or None: Triton for fp16/bf16/fp32 logits
    on CUDA when it imports, PyTorch otherwise."""
    backend = backend or _default_backend(logits)
    if logits.dim() != 2 or logits.size(0) != 2 * target.numel() or keep.shape != target.shape:
        raise ValueError(
            f"expected logits (2n, V), target (n,) and keep (n,), got {tuple(logits.shape)}, "
            f"{tuple(target.shape)} and {tuple(keep.shape)}"
        )
    if backend == "triton":
        from .triton_loss import TritonRDropLoss

        return TritonRDropLoss.apply(logits, target, keep, float(epsilon), float(alpha), simcut)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch', 'triton' or None, got {backend!r}")
    rows = keep.nonzero().view(-1)
    pairs = torch.stack([rows, rows + target.numel()])
    chunk_rows = cuda_chunk_rows(logits.size(-1)) if logits.is_cuda else CHUNK_ROWS
    return fused_rdrop_loss(logits, pairs, target[rows], epsilon, alpha, chunk_rows, simcut)


def _default_backend(logits):
    if not logits.is_cuda or logits.dtype == torch.float64:
        return "torch"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "torch"
    return "triton"


def fused_rdrop_loss(logits, pairs, target, epsilon, alpha, chunk_rows=CHUNK_ROWS, simcut=False):
    """:func:`rdrop_loss` in PyTorch over explicit row pairs: ``pairs`` (2, m) holds the row
    indices of the m counted positions in copy 1 and, aligned, in copy 2; ``target`` (m,)."""
    return FusedRDropLoss.apply(
        logits, pairs, target, float(epsilon), float(alpha), chunk_rows, None, bool(simcut)
    )
