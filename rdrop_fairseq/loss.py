"""The R-Drop (or SimCut) training loss of a log-softmax output layer, straight from the logits.

:func:`training_loss` is the one entry point: it checks its arguments, computes the loss's
coefficients once (:class:`Coefficients`) and hands them to one of two implementations with the
same contract, ``(logits, target, keep, coefficients) -> (loss, nll, kl)`` with autograd:

- ``triton_loss.py``: one Triton program per row pair (CUDA; CPU tensors under
  ``TRITON_INTERPRET=1``);
- ``torch_loss.py``: PyTorch, a few rows at a time.

The definition, both gradients and how each implementation evaluates them: docs/loss.md.
"""

import math
from dataclasses import dataclass

import torch

#: The losses, by the names ``--rdrop-loss`` takes.
MODES = ("rdrop", "simcut")

#: The implementations ``backend`` names.
BACKENDS = ("torch", "triton")


@dataclass(frozen=True)
class Coefficients:
    """The loss's scalars for one vocabulary size (names as in docs/loss.md)."""

    alpha: float  #: weight α of the KL term
    simcut: bool  #: SimCut's loss (copy 1's NLL + α·KL(p₁‖p₂)) rather than R-Drop's
    vocab: int  #: V
    smoothing: float  #: εᵢ = ε/(V−1), the smoothed target's mass on each other token
    nll_weight: float  #: a = 1 − ε − εᵢ, the weight of −log p(y)
    p_weight: float  #: a + εᵢV, the smoothed NLL's weight of p in its gradient
    kl_weight: float  #: the KL term's weight in the gradient: ½α (R-Drop), α (SimCut)

    @classmethod
    def of(cls, epsilon, alpha, mode, vocab):
        smoothing = epsilon / (vocab - 1)
        nll_weight = 1.0 - epsilon - smoothing
        simcut = mode == "simcut"
        return cls(
            alpha,
            simcut,
            vocab,
            smoothing,
            nll_weight,
            p_weight=nll_weight + smoothing * vocab,
            kl_weight=alpha if simcut else 0.5 * alpha,
        )


def training_loss(logits, target, keep, epsilon, alpha, mode="rdrop", backend=None):
    """``(loss, nll, kl)`` of ``logits`` (2n, V): rows [0, n) copy 1 and [n, 2n) copy 2, aligned,
    with copy 1's targets ``target`` (n,) and ``keep`` (n,) bool, the positions that count.

    ``mode`` ``"rdrop"``: ``loss`` is the summed label-smoothed NLL of both copies +
    α·½[KL(p₁‖p₂) + KL(p₂‖p₁)], ``nll`` the summed NLL of both copies and ``kl`` the summed
    symmetric KL. ``"simcut"``: copy 1's label-smoothed NLL + α·KL(p₁‖p₂), copy 1's NLL and that
    KL. ``nll`` and ``kl`` are for logging (no gradient). Arithmetic in fp32 (fp64 for fp64
    logits); the gradient in the logits' dtype.

    ``backend``: ``"triton"``, ``"torch"``, or None: Triton for fp16/bf16/fp32 logits on CUDA when
    it imports, PyTorch otherwise. Neither makes the host wait for a CUDA device."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be 'torch', 'triton' or None, got {backend!r}")
    if logits.dim() != 2 or logits.size(0) != 2 * target.numel() or keep.shape != target.shape:
        raise ValueError(
            f"expected logits (2n, V), target (n,) and keep (n,), got {tuple(logits.shape)}, "
            f"{tuple(target.shape)} and {tuple(keep.shape)}"
        )
    if keep.dtype != torch.bool or logits.size(1) < 2:
        raise ValueError(
            f"expected a bool keep mask and V >= 2, got {keep.dtype} and V = {logits.size(1)}"
        )
    epsilon, alpha = float(epsilon), float(alpha)
    if not (0.0 <= epsilon <= 1.0 and 0.0 <= alpha < math.inf):
        raise ValueError(
            f"expected 0 <= epsilon <= 1 and a finite alpha >= 0, got {epsilon} and {alpha}"
        )
    coefficients = Coefficients.of(epsilon, alpha, mode, logits.size(1))
    if (backend or default_backend(logits)) == "triton":
        from . import triton_loss

        return triton_loss.evaluate(logits, target, keep, coefficients)
    from . import torch_loss

    return torch_loss.evaluate(logits, target, keep, coefficients)


def default_backend(logits):
    """Triton for fp16/bf16/fp32 logits on CUDA when it imports; PyTorch otherwise."""
    if not logits.is_cuda or logits.dtype == torch.float64:
        return "torch"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "torch"
    return "triton"
