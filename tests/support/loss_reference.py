"""The one float64 reference every loss test compares with: the loss and its logit gradient from
the definitions (docs/loss.md), on the logits' device; how far an fp32/fp16/bf16 gradient may be
from it; and :class:`HostSyncs`, which counts what makes the host wait for a device."""

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

#: fp32 rounding of a gradient entry, in units of 2⁻²⁴ times the sum of its terms' magnitudes (an
#: entry can be the small difference of large terms; p = exp(x − lse) carries lse's rounding).
FP32_ROUNDING = 64 * 2.0**-24


def reference_loss(logits, target, keep, epsilon, alpha, mode="rdrop"):
    """(loss, nll, kl) in float64 from the definitions (docs/loss.md), differentiable: fairseq's
    label-smoothed NLL of both copies + α·½[KL(p‖q) + KL(q‖p)] summed over the kept pairs of
    ``logits`` (2n, V) (``mode`` "simcut": copy 1's + α·KL(p‖q)). Log-probabilities may stand for
    the logits (their log-softmax is themselves). A token that is −inf in both copies of a pair
    adds nothing (probability 0 in both); one that is −inf in one copy only adds 0 to the KL from
    that copy and +inf to the KL from the other."""
    x = logits.double()
    n, vocab = target.numel(), x.size(1)
    eps_i = epsilon / (vocab - 1)
    lprobs = F.log_softmax(x, -1)
    l1, l2 = lprobs[:n], lprobs[n:]
    masked1, masked2 = x[:n].isneginf(), x[n:].isneginf()
    d = torch.where(masked1 | masked2, 0.0, l1 - l2)  # p·(−inf − l) and the like: below
    y = target.view(n, 1)
    kl12 = (l1.exp() * d).sum(-1) + torch.where((masked2 & ~masked1).any(-1), torch.inf, 0.0)
    kl21 = -(l2.exp() * d).sum(-1) + torch.where((masked1 & ~masked2).any(-1), torch.inf, 0.0)
    if mode == "simcut":
        pair_nll, pair_kl, smoothing = -l1.gather(1, y).view(n), kl12, l1.sum(-1)
    else:
        pair_nll = -(l1.gather(1, y) + l2.gather(1, y)).view(n)
        pair_kl, smoothing = 0.5 * (kl12 + kl21), l1.sum(-1) + l2.sum(-1)
    pair_loss = (1 - epsilon - eps_i) * pair_nll + (alpha * pair_kl if alpha else 0.0)
    if epsilon:
        pair_loss = pair_loss - eps_i * smoothing
    kept = keep.view(n)
    loss = torch.where(kept, pair_loss, 0.0).sum()
    return loss, torch.where(kept, pair_nll, 0.0).sum(), torch.where(kept, pair_kl, 0.0).sum()


def reference(logits, target, keep, epsilon, alpha, grad_output, mode="rdrop"):
    """:func:`reference_loss` detached, and the logits' gradient at ``grad_output``: for a kept
    pair whose KL in the loss is infinite, ``grad_output``·∞ in both rows (docs/loss.md)."""
    x = logits.detach().double().requires_grad_()
    loss, nll, kl = reference_loss(x, target, keep, epsilon, alpha, mode)
    (grad_output * loss).backward()
    grad = x.grad
    if alpha:
        infinite = pair_kl_is_infinite(logits, mode) & keep.view(-1)
        grad[infinite.repeat(2)] = grad_output * torch.inf if grad_output else 0.0
    return loss.detach(), nll.detach(), kl.detach(), grad


def pair_kl_is_infinite(logits, mode="rdrop"):
    """Per pair of ``logits`` (2n, V), whether the loss's KL is infinite: a token −inf in one
    copy only (SimCut, whose loss has KL(p₁‖p₂) only: in copy 2 only)."""
    masked1, masked2 = logits.detach().isneginf().chunk(2)
    one_sided = masked2 & ~masked1 if mode == "simcut" else masked1 ^ masked2
    return one_sided.any(-1)


def criterion_reference(output, target, pad, epsilon, alpha, mode="rdrop", prefix=0):
    """:func:`reference_loss` of a criterion's batch: ``output`` (2B, T, V) logits or
    log-probabilities of both stacked copies, ``target`` (B, T) one copy's, pad and the first
    ``prefix`` positions not counted."""
    keep = target.ne(pad)
    keep[:, :prefix] = False
    flat = output.reshape(-1, output.size(-1))
    return reference_loss(flat, target.reshape(-1), keep.reshape(-1), epsilon, alpha, mode)


def gradient_term_sizes(logits, target, keep, epsilon, alpha, grad_output, mode="rdrop"):
    """Per logit, Σ|terms| of the gradient formula in float64 (an upper bound for SimCut's,
    whose KL term has twice R-Drop's weight and copy 2 no NLL); 0 on pad rows."""
    x = logits.detach().double()
    n, vocab = target.numel(), x.size(1)
    eps_i = epsilon / (vocab - 1)
    a = 1 - epsilon - eps_i
    lprobs = x.log_softmax(-1)
    l1, l2 = lprobs[:n], lprobs[n:]
    p1, p2 = l1.exp(), l2.exp()
    d = torch.where(x[:n].isneginf() | x[n:].isneginf(), 0.0, l1 - l2).abs()
    onehot = F.one_hot(target, vocab)
    sizes = []
    for p, kl in ((p1, (p1 * d).sum(-1, keepdim=True)), (p2, (p2 * d).sum(-1, keepdim=True))):
        nll = (a + eps_i * vocab) * p + eps_i + a * onehot
        kl_weight = alpha if mode == "simcut" else 0.5 * alpha
        sizes.append((nll + kl_weight * (p * (d + kl) + p1 + p2)) * keep.unsqueeze(1))
    return grad_output * torch.cat(sizes)


def ulp(x):
    """The spacing of ``x``'s dtype at each value of ``x`` (subnormal spacing near zero)."""
    info = torch.finfo(x.dtype)
    _, exponent = torch.frexp(x.float())
    spacing = info.eps * torch.exp2(exponent.float() - 1)
    subnormal_spacing = info.eps * info.smallest_normal
    return torch.where(x.float().abs() >= info.smallest_normal, spacing, subnormal_spacing)


def assert_gradient_close(grad, exact, term_sizes, rounding=FP32_ROUNDING):
    """fp32: ``grad`` equals the float64 ``exact`` within fp32 rounding (``rounding`` times the
    term sizes). fp16/bf16: within one ulp of ``exact`` rounded via fp32 (plus that rounding),
    inf exactly where that value is."""
    error_bound = rounding * term_sizes
    if grad.dtype == torch.float32:
        infinite = exact.isinf()  # an infinite KL's gradient: exactly
        assert torch.equal(grad.isinf(), infinite)
        assert torch.equal(grad[infinite], exact[infinite].float())
        error = (grad.double() - exact).abs()[~infinite]
        bound = error_bound[~infinite] + 2.0**-149  # fp32's smallest subnormal: p that underflows
        assert (error <= bound).all(), f"max error {error.max()}"
        return
    rounded = exact.float().to(grad.dtype)
    assert torch.equal(grad.isinf(), rounded.isinf()) and not grad.isnan().any()
    assert torch.equal(grad[grad.isinf()], rounded[grad.isinf()])
    finite = rounded.isfinite()
    error = (grad.double() - rounded.double()).abs()[finite]
    assert (error <= ulp(rounded)[finite] + error_bound[finite]).all(), f"max error {error.max()}"


def mask_in_one_copy(logits, target, copy):
    """``logits`` (2n, V, n ≥ 4) with one token (never the target) set to −inf in copy ``copy``
    (1 or 2) only, in pairs 0, 1 and 2 (pair 2's other copy gives it a logit 120 below its
    smallest: a probability that underflows in fp32 but not in float64), and one token −inf in
    both copies of pair 3."""
    x = logits.detach().clone()
    n = target.numel()
    this, other = (0, n) if copy == 1 else (n, 0)
    for pair in range(4):
        token = (int(target[pair]) + 1 + pair) % x.size(1)
        x[this + pair, token] = float("-inf")
        if pair == 2:
            x[other + pair, token] = x[other + pair].min() - 120
        if pair == 3:
            x[other + pair, token] = float("-inf")
    return x


def check_against_reference(
    logits, target, keep, epsilon, alpha, rounding=FP32_ROUNDING, mode="rdrop", backend="triton"
):
    """An implementation's loss, NLL, KL and logits' gradient (at ``grad_output`` 1.7) against
    :func:`reference`; pad pairs get exactly zero gradient."""
    from rdrop_fairseq.loss import training_loss

    loss, nll, kl = training_loss(logits, target, keep, epsilon, alpha, mode, backend)
    loss.backward(torch.tensor(1.7, device=logits.device))
    ref_loss, ref_nll, ref_kl, ref_grad = reference(logits, target, keep, epsilon, alpha, 1.7, mode)

    assert loss.dtype == nll.dtype == kl.dtype == torch.promote_types(logits.dtype, torch.float32)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-6, atol=0)
    torch.testing.assert_close(nll.double(), ref_nll, rtol=2e-6, atol=0)
    if alpha:
        torch.testing.assert_close(kl.double(), ref_kl, rtol=1e-5, atol=1e-6)
    else:
        assert kl.item() == 0.0
    assert logits.grad.dtype == logits.dtype
    pad_rows = torch.cat([~keep, ~keep])
    assert not logits.grad[pad_rows].any() and not ref_grad[pad_rows].any()
    sizes = gradient_term_sizes(logits, target, keep, epsilon, alpha, 1.7, mode)
    assert_gradient_close(logits.grad, ref_grad, sizes, rounding)
    n = target.numel()  # both copies' counted rows have gradients (SimCut's copy 2: by the KL)
    assert ref_grad[:n][keep].abs().max() > 0
    assert (ref_grad[n:][keep].abs().max() > 0) == (mode == "rdrop" or alpha > 0)


class HostSyncs(TorchDispatchMode):
    """Records the aten ops that make the host wait for a CUDA device (on any device)."""

    SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::item"}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def criterion_host_syncs(folder):
    """The host syncs of one training forward + backward of a real tiny Transformer, by our
    criterion and by stock label_smoothed_cross_entropy on the same model and batch, and our
    logging output: ``(ours, stock, log)``."""
    from fairseq.criterions.label_smoothed_cross_entropy import (
        LabelSmoothedCrossEntropyCriterion,
    )

    from support.tiny_model import build, random_sample

    _, task, model, ours = build(folder)
    stock = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)
    sample = random_sample(task.target_dictionary, bsz=3, tgt_len=7, src_len=6)
    model.train()
    syncs, logs = [], []
    for criterion in (ours, stock):
        with HostSyncs() as seen:
            loss, _, log = criterion(model, sample)
            loss.backward()
        syncs.append(seen.seen)
        logs.append(log)
    return syncs[0], syncs[1], logs[0]
