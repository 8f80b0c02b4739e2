"""The Triton kernels (triton_loss.py) against the float64 reference of support/loss_reference.py,
run on the CPU by Triton's interpreter: values and gradients of both copies, pad pairs, ε × α,
R-Drop's and SimCut's loss, fp32/fp16/bf16 logits, fp16 at a loss scale of 2¹⁵, tokens masked
to −inf, a vocabulary that is not a multiple of the block; the criterion on the kernel makes the
host wait no more than the stock criterion. test_kernel_compilation.py compiles the kernels for
real GPUs, which the interpreter does not do."""

import pytest
import torch

pytest.importorskip("triton", reason="the Triton loss kernel needs `pip install triton`")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from rdrop_fairseq import triton_loss  # noqa: E402
from rdrop_fairseq.loss import training_loss  # noqa: E402
from support.loss_reference import (  # noqa: E402
    assert_gradient_close,
    check_against_reference,
    criterion_host_syncs,
    gradient_term_sizes,
    mask_in_one_copy,
    reference,
    reference_loss,
)

if not isinstance(triton_loss._rdrop_forward_kernel, InterpretedFunction):
    pytest.skip(
        "the kernels are compiled in this process (conftest.py interprets them only "
        "without a GPU): the tests marked cuda run them on the GPU",
        allow_module_level=True,
    )

pytestmark = [
    # numpy's view of what the kernels compute on purpose: −inf − −inf, fp16 overflow to inf
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

VOCAB = 1003  # four blocks of 256, the last one partly past the vocabulary


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 256 columns, so that every sweep over the vocabulary takes several steps."""
    monkeypatch.setattr(triton_loss, "MAX_BLOCK", 256)


def setup(dtype, pairs=6, vocab=VOCAB, seed=0, scale=3.0):
    """Logits of ``pairs`` row pairs (copy 2 near copy 1, as two dropout masks give), targets and
    a keep mask with two pad pairs."""
    g = torch.Generator().manual_seed(seed)
    copy1 = scale * torch.randn(pairs, vocab, generator=g, dtype=torch.float64)
    copy2 = copy1 + scale / 3 * torch.randn(pairs, vocab, generator=g, dtype=torch.float64)
    logits = torch.cat([copy1, copy2]).to(dtype).requires_grad_()
    target = torch.randint(vocab, (pairs,), generator=g)
    keep = torch.ones(pairs, dtype=torch.bool)
    keep[[1, pairs - 1]] = False
    return logits, target, keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("epsilon,alpha", [(0.0, 0.0), (0.0, 5.0), (0.1, 0.0), (0.1, 5.0)])
def test_values_and_gradients_match_float64_reference(dtype, epsilon, alpha):
    logits, target, keep = setup(dtype)
    check_against_reference(logits, target, keep, epsilon, alpha)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_simcut_values_and_gradients_match_float64_reference(dtype, epsilon):
    logits, target, keep = setup(dtype)
    check_against_reference(logits, target, keep, epsilon, 3.0, mode="simcut")


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_fp16_at_loss_scale_2_15_overflows_exactly_where_fp32_exceeds_fp16(epsilon):
    """Also: gradients too small for fp16 unless scaled first survive (ε = 0 leaves them)."""
    logits, target, keep = setup(torch.float16, seed=1, scale=8.0)  # peaked: gradients near ±2
    loss, _, _ = training_loss(logits, target, keep, epsilon, 5.0, backend="triton")
    loss.backward(torch.tensor(2.0**15))
    _, _, _, ref_grad = reference(logits, target, keep, epsilon, 5.0, 2.0**15)
    sizes = gradient_term_sizes(logits, target, keep, epsilon, 5.0, 2.0**15)
    assert_gradient_close(logits.grad, ref_grad, sizes)
    overflow = logits.grad.isinf()
    assert overflow.any() and not overflow.all()  # the test reaches fp16's limit on both sides


def test_tokens_masked_to_minus_inf_in_both_copies_add_nothing():
    logits, target, keep = setup(torch.float32, seed=2)
    target[target.lt(256)] += 256
    masked = logits.detach().clone()
    n = target.numel()
    g = torch.Generator().manual_seed(3)
    for i in range(n):  # a different set of masked tokens per pair, the target never among them
        tokens = torch.randperm(VOCAB, generator=g)[:300]
        tokens = tokens[tokens != target[i]]
        masked[i, tokens] = masked[n + i, tokens] = float("-inf")
    masked[:, :256] = float("-inf")  # and the whole first block
    masked.requires_grad_()
    loss, nll, kl = training_loss(masked, target, keep, 0.0, 5.0, backend="triton")  # ε=0: finite
    loss.backward(torch.tensor(1.7))
    ref_loss, ref_nll, ref_kl, ref_grad = reference(masked, target, keep, 0.0, 5.0, 1.7)

    assert torch.isfinite(loss) and torch.isfinite(masked.grad).all()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=0)
    torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-6)
    sizes = gradient_term_sizes(masked, target, keep, 0.0, 5.0, 1.7)
    assert_gradient_close(masked.grad, ref_grad, sizes)
    assert masked.grad[masked.detach().isinf()].abs().max() == 0


def test_identical_copies_have_zero_kl_and_all_pad_batches_zero_everything():
    logits, target, keep = setup(torch.float32)
    n = target.numel()
    twins = torch.cat([logits.detach()[:n], logits.detach()[:n]])
    assert training_loss(twins, target, keep, 0.1, 5.0, backend="triton")[2].item() == 0.0

    logits.grad = None
    loss, nll, kl = training_loss(
        logits, target, torch.zeros_like(keep), 0.1, 5.0, backend="triton"
    )
    loss.backward()
    assert loss.item() == nll.item() == kl.item() == 0.0
    assert logits.grad.abs().max() == 0

    empty = torch.zeros(0, VOCAB, requires_grad=True)
    no_target = torch.zeros(0, dtype=torch.long)
    loss, _, _ = training_loss(empty, no_target, no_target.bool(), 0.1, 5.0, backend="triton")
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == (0, VOCAB)


def test_criterion_with_the_kernel_waits_for_the_device_no_more_than_the_stock_criterion(
    tmp_path, monkeypatch
):
    """Host syncs (item, nonzero, ...) in a training forward + backward of a real Transformer:
    ours with the Triton kernel against stock label_smoothed_cross_entropy on the same model."""
    monkeypatch.setattr("rdrop_fairseq.backend.default_backend", lambda logits: "triton")
    calls = []
    monkeypatch.setattr(
        triton_loss,
        "evaluate",
        lambda *args: calls.append(args) or triton_loss.TritonTrainingLoss.apply(*args),
    )
    ours, stock, log = criterion_host_syncs(tmp_path)
    assert log["kl_loss"] > 0 and len(calls) == 2  # the kernels' trial, then the loss
    assert ours == stock


@pytest.mark.parametrize("mode,copy", [("rdrop", 1), ("rdrop", 2), ("simcut", 1), ("simcut", 2)])
def test_a_token_masked_in_one_copy_only_gives_an_infinite_kl_never_nan(mode, copy):
    """An infinite KL (R-Drop: either copy; SimCut: copy 2) is loss = kl = +inf and a gradient of
    +inf in both rows of the pair; SimCut's KL(p₁‖p₂) with copy 1 masked stays finite."""
    logits, target, keep = setup(torch.float32, seed=4)
    masked = mask_in_one_copy(logits, target, copy).requires_grad_()
    assert reference_loss(masked, target, keep, 0.0, 5.0, mode)[2].isinf() == (
        mode == "rdrop" or copy == 2
    )
    check_against_reference(masked, target, keep, 0.0, 5.0, mode=mode, backend="triton")
    assert not masked.grad.isnan().any()
