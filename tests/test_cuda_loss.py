"""The Triton R-Drop kernels compiled and run on a CUDA GPU, against the float64 reference of
loss_reference.py computed on the same GPU: values and gradients of both copies and pad pairs for
fp32/fp16/bf16 logits × ε × α, and SimCut's loss, at an odd vocabulary (10 007) and at a realistic
size (4096 pairs × 40 000, fp16); fp16 at a loss scale of 2¹⁵; the PyTorch path on the same GPU;
neither path waiting for the device; tokens masked to −inf; a training step of a real
Transformer on the GPU against the same step on the CPU, with no more host syncs than the stock
criterion. Skipped without CUDA or Triton.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 for the whole session (test_triton_loss.py
runs the kernels interpreted); with one, the kernels are compiled and this file tests them.

``RDROP_TEST_DEVICE=cpu TRITON_INTERPRET=1`` runs these tests on the CPU through the interpreter,
to check the tests themselves where there is no GPU (add ``-k "not realistic"``: the realistic
size takes the interpreter too long)."""

import copy
import os

import pytest
import torch

pytest.importorskip("triton", reason="the Triton loss kernel needs `pip install triton`")

from fairseq.criterions.label_smoothed_cross_entropy import (  # noqa: E402
    LabelSmoothedCrossEntropyCriterion,
)
from fairseq.modules.fairseq_dropout import FairseqDropout  # noqa: E402
from fairseq.utils import apply_to_sample  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from rdrop_fairseq.backend import LossBackend  # noqa: E402
from rdrop_fairseq.loss import training_loss  # noqa: E402
from support.loss_reference import (  # noqa: E402
    FP32_ROUNDING,
    HostSyncs,
    assert_gradient_close,
    check_against_reference,
    gradient_term_sizes,
    mask_in_one_copy,
    reference,
)
from support.tiny_model import build, random_sample  # noqa: E402

DEVICE = os.environ.get("RDROP_TEST_DEVICE", "cuda")
ON_CPU = DEVICE == "cpu"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not ON_CPU and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        ON_CPU and os.environ.get("TRITON_INTERPRET") != "1",
        reason="RDROP_TEST_DEVICE=cpu needs TRITON_INTERPRET=1",
    ),
    # the interpreter's numpy on what the kernels compute on purpose: −inf − −inf, fp16 overflow
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

#: fp32 slack on the GPU: its exp is ex2.approx (2 ulp) of x·log₂e rounded to fp32, a few ulps
#: of p more than the interpreter's exp; twice the interpreter's bound (a wrong term is far off).
GPU_FP32_ROUNDING = 2 * FP32_ROUNDING

VOCAB = 10_007  # odd: the last block of 4096 only partly inside the vocabulary


@pytest.fixture(autouse=True)
def compiled_kernels_only():
    """On a GPU with TRITON_INTERPRET=1 set by hand the kernels are interpreted: skip rather than
    test the interpreter on the GPU."""
    if not ON_CPU and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 on a GPU machine: unset it to test the compiled kernels")


def triton_kernels():
    """rdrop_fairseq.triton_loss, imported when a test runs, not with this file: collected first,
    this file must leave it for test_triton_loss.py to import under TRITON_INTERPRET=1."""
    from rdrop_fairseq import triton_loss

    return triton_loss


def setup(dtype, pairs=256, vocab=VOCAB, seed=0, scale=3.0):
    """Logits of ``pairs`` row pairs on DEVICE (copy 2 near copy 1, as two dropout masks give),
    targets and a keep mask with every seventh pair padding. Drawn on the CPU: the same numbers
    on every device."""
    g = torch.Generator().manual_seed(seed)
    copy1 = scale * torch.randn(pairs, vocab, generator=g)
    copy2 = copy1 + scale / 3 * torch.randn(pairs, vocab, generator=g)
    logits = torch.cat([copy1, copy2]).to(DEVICE, dtype).requires_grad_()
    target = torch.randint(vocab, (pairs,), generator=g).to(DEVICE)
    keep = (torch.arange(pairs) % 7 != 1).to(DEVICE)
    return logits, target, keep


def grad_output(value):
    return torch.tensor(value, device=DEVICE)


def check_on_the_gpu(logits, target, keep, epsilon, alpha, mode="rdrop"):
    check_against_reference(logits, target, keep, epsilon, alpha, GPU_FP32_ROUNDING, mode)


def test_cuda_kernels_are_compiled_not_interpreted():
    if ON_CPU:
        pytest.skip("RDROP_TEST_DEVICE=cpu runs the kernels in Triton's interpreter")
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), (
        "TRITON_INTERPRET is set (test_triton_loss.py sets it): run this file in its own process"
    )
    kernels = triton_kernels()
    for kernel in (kernels._rdrop_forward_kernel, kernels._rdrop_backward_kernel):
        assert isinstance(kernel, JITFunction), type(kernel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("epsilon,alpha", [(0.0, 0.0), (0.0, 5.0), (0.1, 0.0), (0.1, 5.0)])
def test_cuda_values_and_gradients_match_float64_reference(dtype, epsilon, alpha):
    check_on_the_gpu(*setup(dtype), epsilon, alpha)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_simcut_values_and_gradients_match_float64_reference(dtype):
    check_on_the_gpu(*setup(dtype), 0.1, 3.0, mode="simcut")


def test_cuda_fp16_values_and_gradients_match_float64_reference_at_realistic_size():
    check_on_the_gpu(*setup(torch.float16, pairs=4096, vocab=40_000), 0.1, 5.0)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_cuda_fp16_at_loss_scale_2_15_overflows_exactly_where_fp32_exceeds_fp16(epsilon):
    """Also: gradients too small for fp16 unless scaled first survive (ε = 0 leaves them)."""
    logits, target, keep = setup(torch.float16, seed=1, scale=8.0)  # peaked: gradients near ±2
    loss, _, _ = training_loss(logits, target, keep, epsilon, 5.0, backend="triton")
    loss.backward(grad_output(2.0**15))
    _, _, _, ref_grad = reference(logits, target, keep, epsilon, 5.0, 2.0**15)
    sizes = gradient_term_sizes(logits, target, keep, epsilon, 5.0, 2.0**15)
    assert_gradient_close(logits.grad, ref_grad, sizes, GPU_FP32_ROUNDING)
    overflow = logits.grad.isinf()
    assert overflow.any() and not overflow.all()  # the test reaches fp16's limit on both sides


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_triton_and_pytorch_paths_agree(dtype):
    logits, target, keep = setup(dtype, seed=4)
    results = {}
    for backend in ("triton", "torch"):
        logits.grad = None
        values = training_loss(logits, target, keep, 0.1, 5.0, backend=backend)
        values[0].backward(grad_output(1.7))
        results[backend] = values, logits.grad
    (triton_values, triton_grad), (torch_values, torch_grad) = results.values()
    # the PyTorch path sums the KL of all pairs in one fp32 dot product: 1e-5 off at this size
    for ours, theirs, rtol in zip(triton_values, torch_values, (1e-5, 1e-5, 1e-4)):
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=0)
    # each path is within GPU_FP32_ROUNDING of the exact gradient, so within twice that of the other
    sizes = gradient_term_sizes(logits, target, keep, 0.1, 5.0, 1.7)
    assert_gradient_close(triton_grad, torch_grad.double(), sizes, 2 * GPU_FP32_ROUNDING)
    assert triton_grad.abs().max() > 0


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cuda_loss_waits_for_nothing(backend):
    """Forward and backward on the device read nothing back to the host, on either path."""
    if ON_CPU and backend == "torch":
        pytest.skip(
            "on the CPU the PyTorch path selects rows (test_torch_loss.py checks its "
            "device mode on the CPU)"
        )
    logits, target, keep = setup(torch.float16, seed=5)
    with HostSyncs() as syncs:
        loss, _, _ = training_loss(logits, target, keep, 0.1, 5.0, backend=backend)
        loss.backward(grad_output(2.0**10))
    assert syncs.seen == []
    assert logits.grad.isfinite().all() and logits.grad.abs().max() > 0


def test_cuda_tokens_masked_to_minus_inf_in_both_copies_add_nothing():
    logits, _, keep = setup(torch.float32, seed=2)
    n, block = keep.numel(), triton_kernels().block_size(VOCAB)
    g = torch.Generator().manual_seed(3)
    target = torch.randint(block, VOCAB, (n,), generator=g)
    masked_tokens = torch.rand(n, VOCAB, generator=g) < 0.3  # a different set for every pair
    masked_tokens[torch.arange(n), target] = False  # the target never among them
    masked_tokens[:, :block] = True  # and the whole first block
    mask = torch.cat([masked_tokens, masked_tokens]).to(DEVICE)
    masked = logits.detach().masked_fill(mask, float("-inf")).requires_grad_()
    target = target.to(DEVICE)
    loss, nll, kl = training_loss(masked, target, keep, 0.0, 5.0, backend="triton")  # ε=0: finite
    loss.backward(grad_output(1.7))
    ref_loss, ref_nll, ref_kl, ref_grad = reference(masked, target, keep, 0.0, 5.0, 1.7)

    assert torch.isfinite(loss) and torch.isfinite(masked.grad).all()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=0)
    torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-6)
    sizes = gradient_term_sizes(masked, target, keep, 0.0, 5.0, 1.7)
    assert_gradient_close(masked.grad, ref_grad, sizes, GPU_FP32_ROUNDING)
    assert masked.grad[mask].abs().max() == 0


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("mode,copy", [("rdrop", 1), ("simcut", 1), ("simcut", 2)])
def test_cuda_a_token_masked_in_one_copy_only_gives_an_infinite_kl_never_nan(backend, mode, copy):
    """loss = kl = +inf and +inf gradients in both rows of the pair (SimCut with copy 1 masked:
    finite), the same from both paths (docs/loss.md)."""
    logits, target, keep = setup(torch.float32, seed=6)
    masked = mask_in_one_copy(logits, target, copy).requires_grad_()
    check_against_reference(masked, target, keep, 0.0, 5.0, GPU_FP32_ROUNDING, mode, backend)
    assert not masked.grad.isnan().any()


def seeded_dropout(generator):
    """FairseqDropout.forward with its masks drawn on the CPU from ``generator``: the same masks
    on every device."""

    def forward(self, x, inplace=False):
        if self.p > 0 and (self.training or self.apply_during_inference):
            kept = torch.rand(x.shape, generator=generator) >= self.p
            return x * kept.to(x.device, x.dtype) / (1 - self.p)
        return x

    return forward


def test_cuda_training_step_matches_the_cpu_and_waits_no_more_than_the_stock_criterion(
    tmp_path, monkeypatch
):
    """A training forward + backward of a real Transformer with the R-Drop criterion, the same
    dropout masks on both devices: loss by the Triton kernel on the GPU, by the PyTorch path on
    the CPU. Same loss, logged values and parameter gradients; and on the GPU no more host syncs
    (item, nonzero, ...) than the stock label_smoothed_cross_entropy on the same model."""
    masks = torch.Generator()
    monkeypatch.setattr(FairseqDropout, "forward", seeded_dropout(masks))
    _, task, model, ours = build(tmp_path)
    stock = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)
    sample = random_sample(task.target_dictionary, bsz=3, tgt_len=7, src_len=6)
    model.train()
    device_model = copy.deepcopy(model).to(DEVICE)
    device_sample = apply_to_sample(lambda t: t.to(DEVICE), sample)

    def step(criterion, model, sample):
        masks.manual_seed(0)
        model.zero_grad()
        with HostSyncs() as syncs:
            loss, _, log = criterion(model, sample)
            loss.backward()
        return log, {name: p.grad for name, p in model.named_parameters()}, syncs.seen

    cpu_log, cpu_grads, _ = step(ours, model, sample)  # on the CPU: the PyTorch path
    monkeypatch.setattr(ours, "loss_backend", LossBackend("triton"))
    log, grads, syncs = step(ours, device_model, device_sample)
    _, _, stock_syncs = step(stock, device_model, device_sample)

    assert cpu_log["kl_loss"] > 0  # the R-Drop loss ran
    for key in ("loss", "nll_loss", "kl_loss"):
        torch.testing.assert_close(log[key].cpu(), cpu_log[key], rtol=1e-4, atol=0)
    # some gradients are 0 but for rounding (a key projection's bias): an absolute slack too
    scale = max(grad.abs().max().item() for grad in cpu_grads.values())
    assert scale > 0
    for name, cpu_grad in cpu_grads.items():
        torch.testing.assert_close(
            grads[name].cpu(),
            cpu_grad,
            rtol=1e-4,
            atol=1e-5 * scale,
            msg=lambda m, name=name: f"{name}: {m}",
        )
    assert syncs == stock_syncs
