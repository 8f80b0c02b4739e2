"""The PyTorch implementation of the training loss (torch_loss.py) and the entry point
``training_loss`` (loss.py), against the float64 reference of support/loss_reference.py (itself
checked against fairseq's label_smoothed_nll_loss and F.kl_div first): values, gradients, dtypes,
edge batches, argument checks; the masked (device) mode waits for nothing. Triton:
test_triton_loss.py."""

import functools

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from rdrop_fairseq import torch_loss
from rdrop_fairseq.loss import Coefficients, training_loss
from support.loss_reference import (
    HostSyncs,
    assert_gradient_close,
    check_against_reference,
    criterion_host_syncs,
    gradient_term_sizes,
    mask_in_one_copy,
    reference,
    reference_loss,
)

EPS = 0.1


def setup(pairs, vocab, seed, dtype=torch.float32, pad_every=3):
    """Logits of ``pairs`` row pairs (copy 2 near copy 1), targets, and every ``pad_every``-th
    pair (from the second) a pad pair."""
    g = torch.Generator().manual_seed(seed)
    copy1 = 3 * torch.randn(pairs, vocab, generator=g, dtype=torch.float64)
    copy2 = copy1 + torch.randn(pairs, vocab, generator=g, dtype=torch.float64)
    logits = torch.cat([copy1, copy2]).to(dtype).requires_grad_()
    target = torch.randint(vocab, (pairs,), generator=g)
    keep = torch.ones(pairs, dtype=torch.bool)
    keep[1::pad_every] = False
    return logits, target, keep


@pytest.mark.parametrize("mode", ["rdrop", "simcut"])
def test_the_reference_is_fairseqs_label_smoothed_nll_and_kl_div(mode):
    logits, target, keep = setup(6, 20, seed=1, dtype=torch.float64)
    lp, lq = F.log_softmax(logits.detach(), -1).chunk(2)
    scored = [lp] if mode == "simcut" else [lp, lq]
    smoothed, nll = label_smoothed_nll_loss(
        torch.cat([x[keep] for x in scored]), target[keep].repeat(len(scored)), EPS
    )
    kl_pq = F.kl_div(lq[keep], lp[keep], reduction="sum", log_target=True)
    kl_qp = F.kl_div(lp[keep], lq[keep], reduction="sum", log_target=True)
    kl = kl_pq if mode == "simcut" else 0.5 * (kl_pq + kl_qp)
    ref = reference_loss(logits.detach(), target, keep, EPS, 3.0, mode)
    for ours, theirs in zip(ref, (smoothed + 3.0 * kl, nll, kl)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("pairs,chunk", [(1, 4), (4, 4), (5, 4), (9, 4), (37, 32), (70, 32)])
@pytest.mark.parametrize(
    "alpha,mode", [(0.0, "rdrop"), (5.0, "rdrop"), (0.0, "simcut"), (3.0, "simcut")]
)
def test_values_and_gradients_match_the_reference(monkeypatch, pairs, chunk, alpha, mode):
    monkeypatch.setattr(torch_loss, "CHUNK_ROWS", chunk)
    logits, target, keep = setup(pairs, 50, seed=pairs, pad_every=3 if pairs > 1 else 2)
    check_against_reference(logits, target, keep, EPS, alpha, mode=mode, backend="torch")


@pytest.mark.parametrize("mode", ["rdrop", "simcut"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_float64(mode, masked):
    logits, target, keep = setup(4, 6, seed=0, dtype=torch.float64)
    c = Coefficients.of(EPS, 3.0, mode, 6)
    assert torch.autograd.gradcheck(
        lambda x: torch_loss.evaluate(x, target, keep, c, masked=masked)[0], (logits,)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_fp32_loss_and_gradients_in_their_dtype(dtype):
    logits, target, keep = setup(64, 1000, seed=4, dtype=dtype)
    check_against_reference(logits, target, keep, EPS, 5.0, backend="torch")


def test_identical_copies_have_zero_kl_and_all_pad_batches_zero_everything():
    logits, target, keep = setup(5, 20, seed=6)
    twins = torch.cat([logits.detach()[:5], logits.detach()[:5]])
    assert training_loss(twins, target, keep, EPS, 5.0, backend="torch")[2].item() == 0.0
    for masked in (False, True):
        logits.grad = None
        c = Coefficients.of(EPS, 5.0, "rdrop", 20)
        loss, nll, kl = torch_loss.evaluate(logits, target, torch.zeros_like(keep), c, masked)
        loss.backward()
        assert loss.item() == nll.item() == kl.item() == 0.0
        assert logits.grad.abs().max() == 0


def test_tokens_masked_to_minus_inf_in_both_copies_add_nothing():
    logits, target, keep = setup(6, 15, seed=7)
    target = target % 10  # never a masked token
    masked = logits.detach().clone()
    masked[:, 10:] = float("-inf")
    masked.requires_grad_()
    check_against_reference(masked, target, keep, 0.0, 5.0, backend="torch")  # ε=0: finite
    assert torch.isfinite(masked.grad).all() and masked.grad[:, 10:].abs().max() == 0


@pytest.mark.parametrize("mode,copy", [("rdrop", 1), ("rdrop", 2), ("simcut", 1), ("simcut", 2)])
def test_a_token_masked_in_one_copy_only_gives_an_infinite_kl_never_nan(monkeypatch, mode, copy):
    """An infinite KL (R-Drop: either copy; SimCut: copy 2) is loss = kl = +inf and a gradient of
    +inf in both rows of the pair; SimCut's KL(p₁‖p₂) with copy 1 masked stays finite. Pairs in
    several chunks; the device mode (no host sync) the same."""
    monkeypatch.setattr(torch_loss, "CHUNK_ROWS", 2)
    logits, target, keep = setup(7, 30, seed=9)
    masked = mask_in_one_copy(logits, target, copy).requires_grad_()
    infinite = mode == "rdrop" or copy == 2
    assert reference_loss(masked, target, keep, 0.0, 5.0, mode)[2].isinf() == infinite
    check_against_reference(masked, target, keep, 0.0, 5.0, mode=mode, backend="torch")
    assert not masked.grad.isnan().any()
    with HostSyncs() as syncs:
        loss, _, kl = torch_loss.evaluate(
            masked, target, keep, Coefficients.of(0.0, 5.0, mode, 30), masked=True
        )
        (grad,) = torch.autograd.grad(loss, masked, torch.tensor(1.7))
    assert syncs.seen == [] and kl.isinf() == infinite
    exact = reference(masked, target, keep, 0.0, 5.0, 1.7, mode)[3]
    sizes = gradient_term_sizes(masked, target, keep, 0.0, 5.0, 1.7, mode)
    assert_gradient_close(grad, exact, sizes)


def test_extreme_logits_stay_finite():
    logits, target, keep = setup(4, 20, seed=8)
    extreme = (1e4 * logits.detach().sign()).requires_grad_()
    loss, _, _ = training_loss(extreme, target, keep, EPS, 5.0, backend="torch")
    loss.backward()
    ref_loss, _, _ = reference_loss(extreme.detach(), target, keep, EPS, 5.0)
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)


def test_log_probabilities_as_input_give_the_same_parameter_gradients():
    """The criterion's path for other output layers feeds log-probabilities (log_softmax of
    log-probabilities is themselves); the extra ``−p·Σg`` term must vanish behind a normalised
    output."""
    g = torch.Generator().manual_seed(10)
    z = (3 * torch.randn(12, 30, generator=g, dtype=torch.float64)).requires_grad_()
    target, keep = torch.randint(30, (6,), generator=g), torch.ones(6, dtype=torch.bool)
    via_lprobs = training_loss(F.log_softmax(z, -1), target, keep, EPS, 5.0)
    (grad_via_lprobs,) = torch.autograd.grad(via_lprobs[0], z)
    via_logits = training_loss(z, target, keep, EPS, 5.0)
    (grad_via_logits,) = torch.autograd.grad(via_logits[0], z)
    for a, b in zip(via_lprobs, via_logits):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_via_lprobs, grad_via_logits)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(logits=torch.zeros(5, 5)), "expected logits"),
        (dict(keep=torch.ones(2).bool()), "expected logits"),
        (dict(keep=torch.ones(3)), "bool keep"),
        (dict(logits=torch.zeros(6, 1)), "V >= 2"),
        (dict(epsilon=-0.1), "epsilon"),
        (dict(alpha=float("inf")), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(mode="rdrop_loss"), "mode"),
        (dict(backend="cuda"), "backend"),
    ],
)
def test_training_loss_rejects_what_it_cannot_compute(change, match):
    args = dict(
        logits=torch.zeros(6, 5),
        target=torch.zeros(3, dtype=torch.long),
        keep=torch.ones(3).bool(),
        epsilon=EPS,
        alpha=5.0,
        mode="rdrop",
        backend=None,
    )
    with pytest.raises(ValueError, match=match):
        training_loss(**{**args, **change})


def test_coefficients_are_those_of_the_definition():
    rdrop, simcut = Coefficients.of(0.1, 4.0, "rdrop", 11), Coefficients.of(0.1, 4.0, "simcut", 11)
    assert rdrop.smoothing == pytest.approx(0.01) and rdrop.nll_weight == pytest.approx(0.89)
    assert rdrop.p_weight == pytest.approx(0.89 + 0.11)
    assert (rdrop.kl_weight, simcut.kl_weight) == (2.0, 4.0)
    assert not rdrop.simcut and simcut.simcut


def test_cuda_chunks_hold_thousands_of_rows_within_the_memory_budget():
    chunk_rows = torch_loss.cuda_chunk_rows
    for vocab, at_least in ((10_000, 4_000), (40_000, 1_000)):
        pairs = chunk_rows(vocab)
        assert 2 * pairs >= at_least  # rows of both copies per chunk
        assert pairs * 2 * vocab * 4 * 6 <= torch_loss.CUDA_CHUNK_BYTES  # six fp32 temporaries
    assert chunk_rows(10_000, budget_bytes=1 << 30) == 2 * chunk_rows(10_000, 1 << 29)
    assert chunk_rows(10**9) == torch_loss.CHUNK_ROWS  # never fewer rows than on CPU


@pytest.mark.parametrize("alpha,mode", [(0.0, "rdrop"), (5.0, "rdrop"), (3.0, "simcut")])
def test_the_device_mode_waits_for_nothing_and_agrees_with_row_selection(monkeypatch, alpha, mode):
    """What the PyTorch path does on CUDA (every pair visited, pad pairs masked, grad_output kept
    on the device), checked on the CPU: no host sync in forward or backward, and within fp32
    rounding of the CPU mode, which selects the counted rows (and syncs, as it may on a CPU)."""
    monkeypatch.setattr(torch_loss, "CHUNK_ROWS", 4)
    logits, target, keep = setup(11, 50, seed=11)
    c = Coefficients.of(EPS, alpha, mode, 50)
    results = {}
    for masked in (False, True):
        with HostSyncs() as syncs:
            values = torch_loss.evaluate(logits, target, keep, c, masked=masked)
            (grad,) = torch.autograd.grad(values[0], logits, torch.tensor(1.7))
        results[masked] = values, grad, syncs.seen
    assert results[True][2] == [] and results[False][2]
    for a, b in zip(results[True][0], results[False][0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    _, _, _, exact = reference(logits, target, keep, EPS, alpha, 1.7, mode)
    sizes = gradient_term_sizes(logits, target, keep, EPS, alpha, 1.7, mode)
    assert_gradient_close(results[True][1], exact, sizes)
    assert results[True][1][torch.cat([~keep, ~keep])].abs().max() == 0


def test_criterion_on_the_device_mode_waits_no_more_than_the_stock_criterion(tmp_path, monkeypatch):
    """Host syncs in a training forward + backward of a real Transformer, the PyTorch loss in
    its device mode (as on CUDA without Triton), against stock label_smoothed_cross_entropy."""
    monkeypatch.setattr(torch_loss, "evaluate", functools.partial(torch_loss.evaluate, masked=True))
    ours, stock, log = criterion_host_syncs(tmp_path)
    assert log["kl_loss"] > 0  # the R-Drop loss ran
    assert ours == stock
