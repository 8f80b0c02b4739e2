"""Precision and edge batches: bf16 on the CPU (after the plugin's --bf16 fix), fp16/bf16 on CUDA
where there is one; a finite KL term for extreme logits and tokens masked to -inf in both copies;
batches at the edges (one sentence, --max-target-positions, a target of only EOS,
--ignore-prefix-size, --sentence-avg) train with a finite loss. A 1-layer, 16-dim Transformer;
the fairseq-train runs use the synthetic corpus (``data_bin``): on the CPU in this process, on
CUDA as a command line."""

import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from fairseq.data import Dictionary, LanguagePairDataset

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, applies the fixes)
from rdrop_fairseq import fairseq_fixes
from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterion as RDrop
from rdrop_fairseq.loss import training_loss
from support import BIN, run_cli
from support.tiny_model import build
from support.training import curve, fairseq_train, last_state, output, train_args


def trained_log(*args):
    """What fairseq-train, run in this process on ``args``, logged; it must end without error."""
    run = fairseq_train(*args)
    assert run.error is None, run.output[-3000:]
    return run.output


def finite_curve(log):
    values = curve(log)
    return values and all(math.isfinite(float(x)) for v in values.values() for x in v[1:])


def test_bf16_on_cpu_trains_with_finite_loss(data_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(fairseq_fixes, "_logged", set())  # logged once a process: as a new one
    log = trained_log(*train_args(data_bin, tmp_path, 4, "--bf16"))
    assert "--bf16 without torch_xla" in log
    assert finite_curve(log) and len(curve(log)) == 4
    model = last_state(tmp_path)["model"]  # saved as fp32 by fairseq
    assert all(torch.isfinite(t).all() for t in model.values())
    assert all(torch.equal(t, t.bfloat16().float()) for t in model.values())  # a bf16 model


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("flag", ["--fp16", "--bf16"])
def test_half_precision_on_cuda_trains_with_finite_loss(data_bin, tmp_path, flag):
    # a command line: CUDA is initialized in its own process, not in this one
    proc = run_cli(BIN / "fairseq-train", *train_args(data_bin, tmp_path, 8, flag, cpu=False))
    log = output(proc)
    assert finite_curve(log) and len(curve(log)) == 8


def masked_logits(rows=6, vocab=11, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = (scale * torch.randn(rows, vocab, generator=g) for _ in range(2))
    return a, b


def reference_kl(lp, lq):
    p, q = lp.double().exp(), lq.double().exp()
    terms = (p - q) * (lp.double() - lq.double())
    return 0.5 * terms.nan_to_num(nan=0.0).sum()  # 0 · (−inf − −inf) := 0


def loss_on_log_probs(lp, lq):
    """The criterion's generic path (the loss on log-probabilities, ε = 0, α = 1, target token 4):
    backpropagates the loss and returns the symmetric KL."""
    target = torch.full((lp.size(0),), 4)
    loss, _, kl = training_loss(torch.cat([lp, lq]), target, target.ge(0), 0.0, 1.0)
    loss.backward()
    return kl


def test_kl_is_finite_with_the_same_tokens_masked_to_minus_inf_in_both_copies():
    a, b = masked_logits()
    mask = torch.zeros_like(a, dtype=torch.bool)
    mask[:, :3] = True
    mask[0, 5] = True
    lp = F.log_softmax(a.masked_fill(mask, float("-inf")), -1).requires_grad_()
    lq = F.log_softmax(b.masked_fill(mask, float("-inf")), -1).requires_grad_()
    kl = loss_on_log_probs(lp, lq)
    assert torch.isfinite(kl) and kl > 0
    assert kl.item() == pytest.approx(reference_kl(lp.detach(), lq.detach()).item(), rel=1e-5)
    for grad in (lp.grad, lq.grad):
        assert torch.isfinite(grad).all() and grad[mask].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kl_is_finite_with_extreme_logits(dtype):
    a, b = masked_logits(scale=1e4)
    a[:, 0], b[:, 1] = 1e4, -1e4
    lp = F.log_softmax(a, -1).to(dtype).requires_grad_()
    lq = F.log_softmax(b, -1).to(dtype).requires_grad_()
    kl = loss_on_log_probs(lp, lq)
    assert torch.isfinite(kl)
    assert kl.item() == pytest.approx(reference_kl(lp.detach(), lq.detach()).item(), rel=1e-3)
    assert torch.isfinite(lp.grad).all() and torch.isfinite(lq.grad).all()


class FixedLogits(torch.nn.Module):
    """Row i of the stacked (two-copy) batch gets ``logits[i]``."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        return self.logits[: src_tokens.size(0), : prev_output_tokens.size(1)], {"attn": None}

    def get_targets(self, sample, net_output):
        return sample["target"]

    def get_normalized_probs(self, net_output, log_probs):
        return F.log_softmax(net_output[0].float(), dim=-1)


def tiny_sample(d, bsz=2, tgt_len=4):
    tgt = torch.randint(
        d.nspecial + 3, len(d), (bsz, tgt_len), generator=torch.Generator().manual_seed(1)
    )
    tgt[:, -1] = d.eos()
    prev = torch.cat([torch.full((bsz, 1), d.eos()), tgt[:, :-1]], 1)
    return {
        "id": torch.arange(bsz),
        "nsentences": bsz,
        "ntokens": tgt.numel(),
        "target": tgt,
        "net_input": {
            "src_tokens": tgt.clone(),
            "src_lengths": torch.full((bsz,), tgt_len),
            "prev_output_tokens": prev,
        },
    }


def test_criterion_kl_is_finite_with_masked_and_extreme_logits():
    d = Dictionary()
    for i in range(12):
        d.add_symbol(f"w{i}")
    sample = tiny_sample(d)
    crit = RDrop(SimpleNamespace(target_dictionary=d), False, 0.1, rdrop_alpha=5.0)

    # ±1e4 logits: everything finite, gradient included
    logits = 1e4 * torch.randn(4, 4, len(d), generator=torch.Generator().manual_seed(2))
    model = FixedLogits(logits).train()
    loss, _, log = crit(model, sample)
    loss.backward()
    assert all(math.isfinite(float(log[k])) for k in ("loss", "nll_loss", "kl_loss"))
    assert torch.isfinite(model.logits.grad).all()

    # tokens masked to -inf in both copies (never the target): the KL term stays finite. (The
    # label-smoothed term is infinite there, as in stock label_smoothed_cross_entropy: smoothing
    # spreads mass over the whole vocabulary, so a masked vocabulary needs --label-smoothing 0.)
    logits = torch.randn(4, 4, len(d), generator=torch.Generator().manual_seed(3))
    logits[..., d.nspecial : d.nspecial + 3] = float("-inf")
    model = FixedLogits(logits).train()
    _, _, log = crit(model, sample)
    assert math.isfinite(float(log["kl_loss"])) and float(log["kl_loss"]) > 0


# -- edge batches --------------------------------------------------------------


def collate(d, pairs):
    """A real fairseq batch (left-padded source, prev_output_tokens) of (source, target) lists."""
    src = [torch.tensor(s + [d.eos()]) for s, _ in pairs]
    tgt = [torch.tensor(t + [d.eos()]) for _, t in pairs]
    dataset = LanguagePairDataset(src, [len(x) for x in src], d, tgt, [len(x) for x in tgt], d)
    return dataset.collater([dataset[i] for i in range(len(pairs))])


EDGES = {
    "one sentence": ([], [([4, 5, 6], [7, 8])]),
    "at --max-target-positions": (
        [
            "--max-source-positions",
            "12",
            "--max-target-positions",
            "12",
            "--encoder-learned-pos",
            "--decoder-learned-pos",
        ],
        [(list(range(4, 15)), list(range(5, 16))), ([4, 5], [6])],
    ),
    "target of only EOS": ([], [([4, 5, 6], []), ([7], [])]),
    "--ignore-prefix-size 1": (["--ignore-prefix-size", "1"], [([4, 5], [6, 7, 8]), ([9], [10])]),
    "--ignore-prefix-size 1, only EOS": (["--ignore-prefix-size", "1"], [([4, 5], [])]),
    "--sentence-avg": (["--sentence-avg"], [([4, 5], [6, 7, 8]), ([9], [10])]),
}


@pytest.mark.parametrize("case", list(EDGES))
def test_edge_batches_train_with_finite_loss(case, tmp_path):
    extra, pairs = EDGES[case]
    _, task, model, crit = build(tmp_path, extra=["--rdrop-alpha", "5", *extra])
    d = task.target_dictionary
    sample = collate(d, pairs)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    torch.manual_seed(0)
    loss, sample_size, log = task.train_step(sample, model, crit, optimizer, update_num=0)
    assert torch.isfinite(loss) and math.isfinite(float(log["kl_loss"]))
    assert float(log["kl_loss"]) >= 0
    expected = len(pairs) if "--sentence-avg" in extra else sample["ntokens"]
    assert sample_size == expected and log["nsentences"] == len(pairs)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    if (
        case == "--ignore-prefix-size 1, only EOS"
    ):  # nothing left after the prefix: no loss, no gradient
        assert loss.item() == 0 and float(log["kl_loss"]) == 0


def test_edge_flags_through_fairseq_train(data_bin, tmp_path):
    log = trained_log(
        *train_args(
            data_bin,
            tmp_path,
            3,
            "--batch-size",
            "1",
            "--sentence-avg",
            "--ignore-prefix-size",
            "1",
            "--max-source-positions",
            "16",
            "--max-target-positions",
            "16",
            "--skip-invalid-size-inputs-valid-test",
        )
    )
    assert finite_curve(log) and len(curve(log)) == 3
    assert re.search(r"train_inner .* bsz=1,", log)
    assert re.search(r"samples have invalid sizes and will be skipped", log)  # longer than 16
