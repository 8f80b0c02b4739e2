"""The PyTorch R-Drop loss against the plain formula (fairseq's label_smoothed_nll_loss on both
copies + ½[KL(P‖Q) + KL(Q‖P)] with F.kl_div; SimCut's: the first copy's + KL(P‖Q)): values,
gradients, dtypes, edge batches, the ``rdrop_loss`` entry point and its chunk size on CUDA. The Triton kernel: test_triton_loss.py."""

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss


from rdrop_fairseq.fused_loss import (
    CHUNK_ROWS,
    CUDA_CHUNK_BYTES,
    FusedRDropLoss,
    cuda_chunk_rows,
    fused_rdrop_loss,
    rdrop_loss,
)

EPS = 0.1


def plain_rdrop_loss(logits, pairs, target, epsilon, alpha):
    """(loss, nll, kl) the textbook way, in float64."""
    lprobs = F.log_softmax(logits.double(), -1)
    lp, lq = lprobs[pairs[0]], lprobs[pairs[1]]
    smoothed, nll = label_smoothed_nll_loss(torch.cat([lp, lq]), target.repeat(2), epsilon)
    kl = 0.5 * (F.kl_div(lq, lp, reduction="sum", log_target=True)
                + F.kl_div(lp, lq, reduction="sum", log_target=True))
    return smoothed + alpha * kl, nll, kl


def plain_simcut_loss(logits, pairs, target, epsilon, alpha):
    """SimCut's (loss, nll, kl) the textbook way, in float64: copy 1's label-smoothed NLL +
    KL(P‖Q), with P copy 1 (clean) and Q copy 2 (cut)."""
    lprobs = F.log_softmax(logits.double(), -1)
    lp, lq = lprobs[pairs[0]], lprobs[pairs[1]]
    smoothed, nll = label_smoothed_nll_loss(lp, target, epsilon)
    kl = F.kl_div(lq, lp, reduction="sum", log_target=True)
    return smoothed + alpha * kl, nll, kl


def setup(rows, copy_rows, vocab, seed, dtype=torch.float32):
    """Logits of ``rows`` positions (the others play pad rows) and ``copy_rows`` shuffled pairs."""
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)).to(dtype)
    pairs = torch.randperm(rows, generator=g)[: 2 * copy_rows].view(2, copy_rows)
    target = torch.randint(vocab, (copy_rows,), generator=g)
    return logits.requires_grad_(), pairs, target


@pytest.mark.parametrize("copy_rows,chunk", [(1, 4), (4, 4), (5, 4), (9, 4), (37, 32), (70, 32)])
@pytest.mark.parametrize("alpha,simcut", [(0.0, False), (5.0, False), (0.0, True), (3.0, True)])
def test_value_and_gradient_match_plain_formula(copy_rows, chunk, alpha, simcut):
    logits, pairs, target = setup(2 * copy_rows + 3, copy_rows, 50, seed=copy_rows)
    loss, nll, kl = fused_rdrop_loss(logits, pairs, target, EPS, alpha, chunk, simcut)
    loss.backward(torch.tensor(1.7))
    ref_logits = logits.detach().double().requires_grad_()
    plain_loss = plain_simcut_loss if simcut else plain_rdrop_loss
    ref_loss, ref_nll, ref_kl = plain_loss(ref_logits, pairs, target, EPS, alpha)
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


@pytest.mark.parametrize("simcut", [False, True])
def test_gradcheck_float64(simcut):
    logits, pairs, target = setup(9, 4, 6, seed=0, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: fused_rdrop_loss(x, pairs, target, EPS, 3.0, 3, simcut)[0], (logits,)
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


def test_rdrop_loss_counts_the_kept_positions_of_aligned_copies():
    logits, _, _ = setup(14, 0, 40, seed=9)
    target = torch.randint(40, (7,), generator=torch.Generator().manual_seed(9))
    keep = torch.tensor([True, False, True, True, False, True, True])
    loss, nll, kl = rdrop_loss(logits, target, keep, EPS, 5.0)
    loss.backward(torch.tensor(1.7))
    rows = keep.nonzero().view(-1)
    ref_logits = logits.detach().double().requires_grad_()
    ref_loss, ref_nll, ref_kl = plain_rdrop_loss(
        ref_logits, torch.stack([rows, rows + 7]), target[rows], EPS, 5.0
    )
    (1.7 * ref_loss).backward()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-5)
    assert logits.grad[torch.cat([~keep, ~keep])].abs().max() == 0


def test_log_probabilities_as_input_give_the_same_parameter_gradients():
    """The criterion's generic path feeds log-probabilities (log_softmax of log-probabilities is
    themselves); the extra ``−p·Σg`` gradient term must vanish behind a normalised output."""
    g = torch.Generator().manual_seed(10)
    z = (3 * torch.randn(12, 30, generator=g, dtype=torch.float64)).requires_grad_()
    target, keep = torch.randint(30, (6,), generator=g), torch.ones(6, dtype=torch.bool)
    via_lprobs = rdrop_loss(F.log_softmax(z, -1), target, keep, EPS, 5.0)
    (grad_via_lprobs,) = torch.autograd.grad(via_lprobs[0], z)
    via_logits = rdrop_loss(z, target, keep, EPS, 5.0)
    (grad_via_logits,) = torch.autograd.grad(via_logits[0], z)
    for a, b in zip(via_lprobs, via_logits):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_via_lprobs, grad_via_logits)


def test_rdrop_loss_rejects_misaligned_shapes_and_unknown_backends():
    logits, target, keep = torch.zeros(6, 5), torch.zeros(3, dtype=torch.long), torch.ones(3).bool()
    with pytest.raises(ValueError, match="expected logits"):
        rdrop_loss(logits[:5], target, keep, EPS, 5.0)
    with pytest.raises(ValueError, match="expected logits"):
        rdrop_loss(logits, target, keep[:2], EPS, 5.0)
    with pytest.raises(ValueError, match="backend"):
        rdrop_loss(logits, target, keep, EPS, 5.0, backend="cuda")


def test_cuda_chunks_hold_thousands_of_rows_within_the_memory_budget():
    for vocab, at_least in ((10_000, 4_000), (40_000, 1_000)):
        pairs = cuda_chunk_rows(vocab)
        assert 2 * pairs >= at_least  # rows of both copies per chunk
        assert pairs * 2 * vocab * 4 * 6 <= CUDA_CHUNK_BYTES  # six fp32 temporaries of both rows
    assert cuda_chunk_rows(10_000, budget_bytes=1 << 30) == 2 * cuda_chunk_rows(10_000, 1 << 29)
    assert cuda_chunk_rows(10**9) == CHUNK_ROWS  # never fewer rows than on CPU


@pytest.mark.parametrize("alpha,simcut", [(0.0, False), (5.0, False), (3.0, True)])
def test_backward_with_a_device_scalar_grad_output_reads_nothing_to_the_host(alpha, simcut):
    """What the PyTorch path does on CUDA (grad_output kept on the device), checked on CPU."""
    logits, pairs, target = setup(21, 9, 50, seed=11)
    grads = []
    for device_scalar in (False, True):
        loss, _, _ = FusedRDropLoss.apply(
            logits, pairs, target, EPS, alpha, 4, device_scalar, simcut
        )
        with HostSyncs() as syncs:
            (grad,) = torch.autograd.grad(loss, logits, torch.tensor(1.7))
        assert syncs.seen == ([] if device_scalar else ["aten::_local_scalar_dense"])
        grads.append(grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)
