"""The fused R-Drop loss against the plain formula (fairseq's label_smoothed_nll_loss on both
copies + ½[KL(P‖Q) + KL(Q‖P)] with F.kl_div): values, gradients, dtypes, edge batches."""

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from rdrop_fairseq.fused_loss import fused_rdrop_loss

EPS = 0.1


def plain_rdrop_loss(logits, pairs, target, epsilon, alpha):
    """(loss, nll, kl) the textbook way, in float64."""
    lprobs = F.log_softmax(logits.double(), -1)
    lp, lq = lprobs[pairs[0]], lprobs[pairs[1]]
    smoothed, nll = label_smoothed_nll_loss(torch.cat([lp, lq]), target.repeat(2), epsilon)
    kl = 0.5 * (F.kl_div(lq, lp, reduction="sum", log_target=True)
                + F.kl_div(lp, lq, reduction="sum", log_target=True))
    return smoothed + alpha * kl, nll, kl


def setup(rows, copy_rows, vocab, seed, dtype=torch.float32):
    """Logits of ``rows`` positions (the others play pad rows) and ``copy_rows`` shuffled pairs."""
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)).to(dtype)
    pairs = torch.randperm(rows, generator=g)[: 2 * copy_rows].view(2, copy_rows)
    target = torch.randint(vocab, (copy_rows,), generator=g)
    return logits.requires_grad_(), pairs, target


@pytest.mark.parametrize("copy_rows,chunk", [(1, 4), (4, 4), (5, 4), (9, 4), (37, 32), (70, 32)])
@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_value_and_gradient_match_plain_formula(copy_rows, chunk, alpha):
    logits, pairs, target = setup(2 * copy_rows + 3, copy_rows, 50, seed=copy_rows)
    loss, nll, kl = fused_rdrop_loss(logits, pairs, target, EPS, alpha, chunk)
    loss.backward(torch.tensor(1.7))
    ref_logits = logits.detach().double().requires_grad_()
    ref_loss, ref_nll, ref_kl = plain_rdrop_loss(ref_logits, pairs, target, EPS, alpha)
    (1.7 * ref_loss).backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nll.double(), ref_nll, rtol=1e-5, atol=1e-5)
    if alpha:
        torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-5)
    unused = torch.ones(logits.size(0), dtype=torch.bool)
    unused[pairs.view(-1)] = False
    assert logits.grad[unused].abs().max() == 0  # pad rows get no gradient


def test_gradcheck_float64():
    logits, pairs, target = setup(9, 4, 6, seed=0, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: fused_rdrop_loss(x, pairs, target, EPS, 3.0, 3)[0], (logits,)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_fp32_loss_and_gradients_in_their_dtype(dtype):
    logits, pairs, target = setup(130, 64, 1000, seed=4, dtype=dtype)
    loss, _, kl = fused_rdrop_loss(logits, pairs, target, EPS, 5.0)
    loss.backward()
    ref_logits = logits.detach().float().requires_grad_()
    ref_loss, _, ref_kl = plain_rdrop_loss(ref_logits, pairs, target, EPS, 5.0)
    ref_loss.backward()
    assert loss.dtype == kl.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-3)
    assert logits.grad.dtype == dtype
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad, rtol=1e-2, atol=1e-3)


def test_identical_copies_have_zero_kl():
    logits, pairs, target = setup(10, 5, 20, seed=6)
    twin = torch.stack([pairs[0], pairs[0]])
    _, _, kl = fused_rdrop_loss(logits, twin, target, EPS, 5.0)
    assert kl.item() == 0.0


def test_all_pad_batch_gives_zero_loss_and_gradient():
    logits = torch.randn(6, 30, requires_grad=True)
    loss, nll, kl = fused_rdrop_loss(logits, torch.zeros(2, 0, dtype=torch.long),
                                     torch.zeros(0, dtype=torch.long), EPS, 5.0)
    loss.backward()
    assert loss.item() == nll.item() == kl.item() == 0.0
    assert logits.grad.abs().max() == 0


def test_tokens_masked_to_minus_inf_in_both_copies_add_nothing():
    logits, pairs, target = setup(12, 6, 15, seed=7)
    target = target % 10  # never a masked token
    masked = logits.detach().clone()
    masked[:, 10:] = float("-inf")
    masked.requires_grad_()
    loss, _, kl = fused_rdrop_loss(masked, pairs, target, 0.0, 5.0)  # no smoothing: finite
    loss.backward()
    small = logits.detach()[:, :10].double().requires_grad_()
    ref_loss, _, ref_kl = plain_rdrop_loss(small, pairs, target, 0.0, 5.0)
    ref_loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(masked.grad).all()
    torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked.grad[:, :10].double(), small.grad, rtol=1e-5, atol=1e-6)
    assert masked.grad[:, 10:].abs().max() == 0


def test_extreme_logits_stay_finite():
    logits, pairs, target = setup(8, 4, 20, seed=8)
    extreme = (1e4 * logits.detach().sign()).requires_grad_()
    loss, _, kl = fused_rdrop_loss(extreme, pairs, target, EPS, 5.0)
    loss.backward()
    ref_loss, _, _ = plain_rdrop_loss(extreme.detach(), pairs, target, EPS, 5.0)
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
