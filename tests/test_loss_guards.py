"""What the criterion refuses before training (an --rdrop-alpha that cannot train) and an output
layer it must train with beyond the default one: fairseq's adaptive softmax, on a real tiny
Transformer, against the float64 reference of support/loss_reference.py."""

import copy

import pytest
import torch
from fairseq.modules.fairseq_dropout import FairseqDropout

from rdrop_fairseq.criterion import MAX_ALPHA, outputs_log_softmax_of_logits
from rdrop_fairseq.errors import UsageError
from rdrop_fairseq.sample import duplicate_sample
from support import USER_DIR
from support.loss_reference import criterion_reference
from support.tiny_model import TINY_ADAPTIVE_SOFTMAX, build, random_sample, train_args
from support.training import fairseq_train

EPS = 0.1


@pytest.mark.parametrize(
    "alpha,message",
    [
        ("nan", "must be a finite number >= 0, got nan"),
        ("inf", "must be a finite number >= 0, got inf"),
        ("-1", "must be a finite number >= 0, got -1.0"),
        ("1e300", "--rdrop-alpha 1e+300 is too large: above 1000"),
        ("1e30", "--rdrop-alpha 1e+30 is too large"),
        ("1e9", "--rdrop-alpha 1e+09 is too large"),
        ("1000.5", "--rdrop-alpha 1000.5 is too large"),
    ],
)
def test_alpha_that_cannot_train_is_refused_when_the_criterion_is_built(tmp_path, alpha, message):
    with pytest.raises(UsageError, match=message.replace("+", r"\+")):
        build(tmp_path, extra=["--rdrop-alpha", alpha])


@pytest.mark.parametrize("alpha", [0.0, 5.0, MAX_ALPHA])
def test_alpha_up_to_the_bound_trains_with_a_finite_loss_and_gradient(tmp_path, alpha):
    _, task, model, crit = build(tmp_path, extra=["--rdrop-alpha", str(alpha)])
    model.train()
    loss, _, _ = crit(model, random_sample(task.target_dictionary, bsz=3, tgt_len=7))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_too_large_alpha_through_fairseq_train_is_one_error_and_writes_nothing(tmp_path):
    """fairseq-train in this process: the UsageError its command line prints as ``error: ...``
    (that hook: tests/test_training_errors.py), before anything is written."""
    save_dir = tmp_path / "checkpoints"
    run = fairseq_train(
        *train_args(
            tmp_path,
            extra=[
                "--user-dir",
                USER_DIR,
                "--rdrop-alpha",
                "1e30",
                "--save-dir",
                save_dir,
                "--max-epoch",
                "1",
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
                "--max-tokens",
                "100",
            ],
        )
    )
    assert isinstance(run.error, UsageError), run.output[-3000:]
    assert str(run.error) == (
        "--rdrop-alpha 1e+30 is too large: above 1000 the KL term outweighs the NLL more "
        "than a thousandfold and training no longer learns the targets (usual values: 0.1 to 10)"
    )
    assert not save_dir.exists() or not any(save_dir.iterdir())


def seeded_dropout(generator):
    """FairseqDropout.forward with its masks drawn from ``generator`` in float32 whatever the
    input's dtype: the same masks for a float32 and a float64 copy of a model."""

    def forward(self, x, inplace=False):
        if self.p > 0 and self.training:
            kept = torch.rand(x.shape, generator=generator) >= self.p
            return x * kept.to(x.dtype) / (1 - self.p)
        return x

    return forward


@pytest.fixture
def adaptive_softmax_model(tmp_path, request, monkeypatch):
    masks = torch.Generator()
    monkeypatch.setattr(FairseqDropout, "forward", seeded_dropout(masks))
    mode = getattr(request, "param", "rdrop")
    _, task, model, crit = build(
        tmp_path,
        architecture=TINY_ADAPTIVE_SOFTMAX,
        extra=["--rdrop-alpha", "3", "--rdrop-loss", mode, "--ignore-prefix-size", "1"],
    )
    assert model.decoder.adaptive_softmax is not None and not outputs_log_softmax_of_logits(model)
    sample = random_sample(task.target_dictionary, bsz=3, tgt_len=7, src_len=6)
    model.train()
    return masks, model, crit, sample, mode


def reference_of(model, sample, masks, pad, mode):
    """(loss, nll, kl) in float64 of the model's log-probabilities as fairseq's adaptive softmax
    computes them (``get_normalized_probs``, not differentiable), the same dropout masks."""
    with torch.no_grad():
        masks.manual_seed(0)
        net_output = model(**duplicate_sample(sample)["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        return criterion_reference(lprobs, sample["target"], pad, EPS, 3.0, mode, prefix=1)


@pytest.mark.parametrize("adaptive_softmax_model", ["rdrop", "simcut"], indirect=True)
def test_adaptive_softmax_trains_and_matches_the_float64_reference(adaptive_softmax_model):
    masks, model, crit, sample, mode = adaptive_softmax_model
    pad = crit.padding_idx
    masks.manual_seed(0)
    loss, sample_size, log = crit(model, sample)
    loss.backward()
    ref_loss, ref_nll, ref_kl = reference_of(model.double(), sample, masks, pad, mode)

    assert sample_size == sample["ntokens"] and log["kl_loss"] > 0  # dropout made copies differ
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(log["kl_loss"].double(), ref_kl, rtol=1e-4, atol=0)
    copies = 1 if mode == "simcut" else 2
    torch.testing.assert_close(log["nll_loss"].double(), ref_nll / copies, rtol=1e-5, atol=0)
    tails = model.decoder.adaptive_softmax.tail
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in tails.parameters())


def test_adaptive_softmax_gradient_is_the_derivative_of_the_reference(adaptive_softmax_model):
    """In float64: the criterion's gradient of the output layer's parameters along a random
    direction against the central difference of the float64 reference loss (fairseq's own
    log-probabilities). Only the output layer: fairseq's attention softmax runs in fp32 even in
    a float64 model, too coarse for a finite difference."""
    masks, model, crit, sample, mode = adaptive_softmax_model
    model = model.double()
    masks.manual_seed(0)
    loss, _, _ = crit(model, sample)
    loss.backward()
    g = torch.Generator().manual_seed(1)
    direction = {
        name: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for name, p in model.named_parameters()
        if "adaptive_softmax" in name
    }
    assert len(direction) > 2  # the head and the tails
    slope = sum(
        (p.grad * direction[name]).sum()
        for name, p in model.named_parameters()
        if name in direction
    )
    step, values = 1e-6, []
    for sign in (1, -1):
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in shifted.named_parameters():
                p.add_(sign * step * direction.get(name, 0.0))
        values.append(reference_of(shifted, sample, masks, crit.padding_idx, mode)[0])
    assert slope.abs() > 1e-3
    torch.testing.assert_close(slope, (values[0] - values[1]) / (2 * step), rtol=1e-6, atol=0)
