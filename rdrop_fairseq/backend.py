"""Which implementation computes the training loss (``--rdrop-backend``), decided once per run.

``auto`` takes the Triton kernel where :func:`~rdrop_fairseq.loss.default_backend` would (fp16,
bf16 or fp32 logits on CUDA, triton importable) and the kernels compile and launch there: the
first call runs both (forward and backward) on a few of its row pairs, and should that raise
anything (a driver too old for this Triton, an unwritable cache directory, a Triton that does not
match torch, ...) the run trains with the PyTorch implementation after one warning saying why.
``triton`` fails in one ``error:`` line instead; ``torch`` never tries Triton. The start-up log
says once which implementation trains.
"""

import logging
import os

import torch

from .errors import UsageError, first_line
from .loss import default_backend, training_loss

logger = logging.getLogger(__name__)

#: The values ``--rdrop-backend`` takes.
CHOICES = ("auto", "torch", "triton")

#: Row pairs of the first batch on which the kernels are tried.
TRIAL_PAIRS = 8


class LossBackend:
    """:func:`~rdrop_fairseq.loss.training_loss` on the implementation ``requested`` (one of
    :data:`CHOICES`) chose at its first call for each device type and dtype."""

    def __init__(self, requested="auto"):
        if requested not in CHOICES:
            raise UsageError(
                f"--rdrop-backend must be one of {', '.join(CHOICES)}, got {requested!r}"
            )
        self.requested = requested
        self.chosen = {}  # (device type, dtype) -> "torch" or "triton"

    def __call__(self, logits, target, keep, epsilon, alpha, mode):
        key = (logits.device.type, logits.dtype)
        if key not in self.chosen:
            self.chosen[key] = self.choose(logits, target, keep, epsilon, alpha, mode)
        return training_loss(logits, target, keep, epsilon, alpha, mode, self.chosen[key])

    def choose(self, logits, target, keep, epsilon, alpha, mode):
        """``"torch"`` or ``"triton"`` for this run, logged in one line."""
        device = logits.device.type
        if self.requested == "triton":
            problem = triton_problem(logits)
            if problem is None:
                try:
                    try_kernels(logits, target, keep, epsilon, alpha, mode)
                except Exception as e:
                    problem = f"the kernel fails on {device}: {first_line(e)}"
            if problem:
                raise UsageError(
                    f"--rdrop-backend triton: {problem}; --rdrop-backend torch "
                    "trains with the PyTorch implementation"
                )
        elif self.requested == "auto" and default_backend(logits) == "triton":
            try:
                try_kernels(logits, target, keep, epsilon, alpha, mode)
            except Exception as e:
                logger.warning(
                    "R-Drop loss: the Triton kernel cannot run on %s (%s): training with the "
                    "PyTorch implementation (same loss within fp32 rounding); choose with "
                    "--rdrop-backend torch or triton",
                    device,
                    first_line(e),
                )
                return "torch"
        else:
            logger.info("R-Drop loss: PyTorch on %s", device)
            return "torch"
        logger.info("R-Drop loss: Triton kernel on %s", device)
        return "triton"


def triton_problem(logits):
    """Why the Triton kernel cannot take ``logits`` at all, or None."""
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"the kernel takes fp16, bf16 or fp32 logits, not {logits.dtype}"
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton cannot be imported ({first_line(e)}; pip install triton)"
    if not logits.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return f"the kernel runs on CUDA devices, and this run trains on {logits.device.type}"
    return None


def try_kernels(logits, target, keep, epsilon, alpha, mode):
    """Compile and launch both kernels, for this batch's dtype, vocabulary and loss, on its first
    :data:`TRIAL_PAIRS` row pairs (nothing waits for the device); raise what they raise."""
    n = target.numel()
    pairs = min(n, TRIAL_PAIRS)
    trial = torch.cat([logits[:pairs], logits[n : n + pairs]]).detach().requires_grad_()
    with torch.enable_grad():
        loss, _, _ = training_loss(
            trial, target[:pairs], keep[:pairs], epsilon, alpha, mode, backend="triton"
        )
        loss.backward()
