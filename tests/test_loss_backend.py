"""``--rdrop-backend`` (backend.py): which implementation trains, decided at the first call and
logged once. Without a GPU the Triton kernels run in the interpreter (conftest.py) and "on CUDA"
is pretended by making ``default_backend`` answer "triton"; with one, the tensors are on it and
the kernels compiled. A kernel that cannot be compiled or launched is a stub raising at launch,
where Triton raises such errors: the forward's or the backward's, since the first call tries
both."""

import logging
import sys

import pytest
import torch

pytest.importorskip("triton", reason="the Triton loss kernel needs `pip install triton`")

from rdrop_fairseq import backend, triton_loss  # noqa: E402
from rdrop_fairseq.backend import LossBackend  # noqa: E402
from rdrop_fairseq.errors import UsageError  # noqa: E402
from rdrop_fairseq.loss import training_loss  # noqa: E402
from support.loss_reference import (  # noqa: E402
    FP32_ROUNDING,
    assert_gradient_close,
    gradient_term_sizes,
    reference,
)
from support.tiny_model import build, random_sample  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDING = FP32_ROUNDING * (2 if DEVICE == "cuda" else 1)  # the GPU's exp: test_cuda_loss.py

DRIVER_TOO_OLD = RuntimeError(
    "Triton Error [CUDA]: the provided PTX was compiled with an unsupported toolchain."
)
KERNELS = {"forward": "_rdrop_forward_kernel", "backward": "_rdrop_backward_kernel"}


class FailingKernel:
    """A kernel whose every launch raises ``error``."""

    def __init__(self, error):
        self.error, self.launches = error, 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            raise self.error

        return launch


@pytest.fixture
def pretend_cuda(monkeypatch):
    """``auto`` chooses as on a CUDA device: it tries the kernels."""
    monkeypatch.setattr(backend, "default_backend", lambda logits: "triton")


def batch(pairs=5, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2 * pairs, vocab, generator=g)
    target = torch.randint(vocab, (pairs,), generator=g)
    keep = torch.ones(pairs, dtype=torch.bool)
    keep[1] = False
    return logits.to(DEVICE), target.to(DEVICE), keep.to(DEVICE)


def loss_and_grad(loss_fn, logits, target, keep):
    x = logits.clone().requires_grad_()
    loss, nll, kl = loss_fn(x, target, keep, 0.1, 5.0, "rdrop")
    loss.backward()
    return loss.detach(), nll, kl, x.grad


def messages(caplog, level):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "rdrop_fairseq.backend" and r.levelno == level
    ]


def test_auto_off_cuda_trains_with_pytorch_and_says_so_once(caplog, monkeypatch):
    monkeypatch.setattr(triton_loss, "_rdrop_forward_kernel", FailingKernel(DRIVER_TOO_OLD))
    monkeypatch.setattr(backend, "default_backend", lambda logits: "torch")  # as off CUDA
    chosen = LossBackend("auto")
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            loss_and_grad(chosen, *batch())
    assert messages(caplog, logging.INFO) == [f"R-Drop loss: PyTorch on {DEVICE}"]
    assert triton_loss._rdrop_forward_kernel.launches == 0


def test_auto_trains_with_the_kernel_where_it_runs(caplog, pretend_cuda):
    chosen = LossBackend("auto")
    with caplog.at_level(logging.INFO):
        ours = loss_and_grad(chosen, *batch())
    kernel = loss_and_grad(lambda *a: training_loss(*a, backend="triton"), *batch())
    assert messages(caplog, logging.INFO) == [f"R-Drop loss: Triton kernel on {DEVICE}"]
    assert chosen.chosen == {(DEVICE, torch.float32): "triton"}
    for a, b in zip(ours, kernel):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "stage,error",
    [
        ("forward", DRIVER_TOO_OLD),
        ("backward", PermissionError(13, "Permission denied", "/home/u/.triton/cache/x.json")),
    ],
)
def test_auto_falls_back_to_pytorch_once_when_the_kernel_cannot_run(
    caplog, monkeypatch, pretend_cuda, stage, error
):
    """One warning saying why and how to choose; then every step on PyTorch, the kernel never
    tried again; the result within fp32 rounding of the kernel's."""
    kernel_result = loss_and_grad(lambda *a: training_loss(*a, backend="triton"), *batch())
    failing = FailingKernel(error)
    monkeypatch.setattr(triton_loss, KERNELS[stage], failing)
    chosen = LossBackend("auto")
    with caplog.at_level(logging.INFO):
        steps = [loss_and_grad(chosen, *batch()) for _ in range(3)]
    [warning] = messages(caplog, logging.WARNING)
    assert not messages(caplog, logging.INFO)
    assert type(error).__name__ in warning and str(error).split(":")[0] in warning
    assert "--rdrop-backend torch or triton" in warning and "\n" not in warning
    assert failing.launches == 1
    torch_result = loss_and_grad(lambda *a: training_loss(*a, backend="torch"), *batch())
    for step in steps:
        for a, b in zip(step, torch_result):
            assert torch.equal(a, b)
    logits, target, keep = batch()  # both within fp32 rounding of the float64 reference
    ref_loss, _, ref_kl, ref_grad = reference(logits, target, keep, 0.1, 5.0, 1.0)
    sizes = gradient_term_sizes(logits, target, keep, 0.1, 5.0, 1.0)
    for loss, _, kl, grad in (torch_result, kernel_result):
        torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=0)
        torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-6)
        assert_gradient_close(grad, ref_grad, sizes, ROUNDING)


def test_triton_asked_for_but_failing_is_one_error_line(monkeypatch, pretend_cuda):
    monkeypatch.setattr(triton_loss, "_rdrop_backward_kernel", FailingKernel(DRIVER_TOO_OLD))
    with pytest.raises(UsageError) as raised:
        loss_and_grad(LossBackend("triton"), *batch())
    message = str(raised.value)
    assert message.startswith(
        f"--rdrop-backend triton: the kernel fails on {DEVICE}: RuntimeError: Triton Error [CUDA]"
    )
    assert "--rdrop-backend torch" in message.split(";")[-1] and "\n" not in message


def test_triton_asked_for_where_it_cannot_run_is_one_error_line(monkeypatch):
    logits, target, keep = (t.cpu() for t in batch())
    with pytest.raises(UsageError, match="fp16, bf16 or fp32 logits, not torch.float64"):
        LossBackend("triton")(logits.double(), target, keep, 0.1, 5.0, "rdrop")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(UsageError, match="runs on CUDA devices, and this run trains on cpu"):
        LossBackend("triton")(logits, target, keep, 0.1, 5.0, "rdrop")
    monkeypatch.setitem(sys.modules, "triton", None)
    with pytest.raises(UsageError, match=r"triton cannot be imported \(.*pip install triton\)"):
        LossBackend("triton")(logits, target, keep, 0.1, 5.0, "rdrop")


def test_criterion_option_reaches_the_loss_and_trains_through_a_failing_kernel(
    tmp_path, caplog, monkeypatch, pretend_cuda
):
    """fairseq parses --rdrop-backend; with auto and a kernel that cannot launch a real
    Transformer's training steps run, with one warning."""
    assert build(tmp_path, extra=["--rdrop-backend", "torch"])[3].loss_backend.requested == "torch"
    with pytest.raises(SystemExit):
        build(tmp_path, extra=["--rdrop-backend", "cuda"])
    _, task, model, criterion = build(tmp_path)
    assert criterion.loss_backend.requested == "auto"
    monkeypatch.setattr(triton_loss, "_rdrop_forward_kernel", FailingKernel(DRIVER_TOO_OLD))
    model.train()
    with caplog.at_level(logging.INFO):
        for seed in range(2):
            loss, _, log = criterion(model, random_sample(task.target_dictionary, seed=seed))
            loss.backward()
            assert torch.isfinite(loss) and log["kl_loss"] > 0
    assert len(messages(caplog, logging.WARNING)) == 1
