"""The chunked symmetric KL against the plain formula: values, gradients, dtypes, edge shapes."""

import pytest
import torch
import torch.nn.functional as F

from rdrop_fairseq.kl import symmetric_kl


def plain_symmetric_kl(lp, lq):
    """½[KL(P‖Q) + KL(Q‖P)] written the textbook way, with F.kl_div (input = log q, target = p)."""
    lp, lq = lp.double(), lq.double()
    kl_pq = F.kl_div(lq, lp, reduction="sum", log_target=True)
    kl_qp = F.kl_div(lp, lq, reduction="sum", log_target=True)
    return 0.5 * (kl_pq + kl_qp)


def log_probs(rows, vocab, seed, dtype=torch.float32, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(rows, vocab, generator=g, dtype=torch.float64)
    return F.log_softmax(logits, -1).to(dtype)


@pytest.mark.parametrize("rows,chunk", [(1, 4), (4, 4), (5, 4), (9, 4), (37, 128), (300, 128)])
def test_value_and_gradient_match_plain_formula(rows, chunk):
    lp = log_probs(rows, 50, seed=rows).requires_grad_()
    lq = log_probs(rows, 50, seed=rows + 1).requires_grad_()
    ours = symmetric_kl(lp, lq, chunk)
    ours.backward(torch.tensor(1.7))
    ref_lp = lp.detach().double().requires_grad_()
    ref_lq = lq.detach().double().requires_grad_()
    ref = plain_symmetric_kl(ref_lp, ref_lq)
    (1.7 * ref).backward()
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp.grad.double(), ref_lp.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lq.grad.double(), ref_lq.grad, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64():
    lp = log_probs(7, 6, seed=0, dtype=torch.float64).requires_grad_()
    lq = log_probs(7, 6, seed=1, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: symmetric_kl(a, b, 3), (lp, lq))


def test_three_dimensional_input_and_one_side_without_grad():
    lp = log_probs(12, 9, seed=2).view(3, 4, 9).requires_grad_()
    lq = log_probs(12, 9, seed=3).view(3, 4, 9)
    symmetric_kl(lp, lq, 5).backward()
    ref_lp = lp.detach().double().requires_grad_()
    plain_symmetric_kl(ref_lp, lq).backward()
    torch.testing.assert_close(lp.grad.double(), ref_lp.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_fp32_result_and_gradients(dtype):
    lp = log_probs(64, 1000, seed=4, dtype=dtype).requires_grad_()
    lq = log_probs(64, 1000, seed=5, dtype=dtype).requires_grad_()
    ours = symmetric_kl(lp, lq)
    ours.backward()
    assert ours.dtype == torch.float32 and torch.isfinite(ours)
    ref = plain_symmetric_kl(lp.detach().float(), lq.detach().float())
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)
    assert lp.grad.dtype == dtype and torch.isfinite(lp.grad).all()
    assert torch.isfinite(lq.grad).all()


def test_identical_inputs_give_zero_and_no_gradient():
    lp = log_probs(10, 20, seed=6).requires_grad_()
    kl = symmetric_kl(lp, lp.detach())
    kl.backward()
    assert kl.item() == 0.0
    assert lp.grad.abs().max() == 0


def test_empty_batch_of_all_pad_rows():
    lp = torch.empty(0, 30, requires_grad=True)
    lq = torch.empty(0, 30, requires_grad=True)
    kl = symmetric_kl(lp, lq)
    kl.backward()
    assert kl.item() == 0.0 and lp.grad.shape == (0, 30)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        symmetric_kl(torch.zeros(2, 3), torch.zeros(3, 3))
