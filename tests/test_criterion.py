"""The R-Drop criterion against the float64 reference of support/loss_reference.py, and against
stock label_smoothed_cross_entropy where the two must agree exactly. The known-output tests run
on both loss paths: a fairseq model with the default output layer (the loss from the logits) and
a model with its own ``get_normalized_probs`` (the loss from the log-probabilities)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary
from fairseq.logging import metrics
from fairseq.models import FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel

from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterion as RDrop
from rdrop_fairseq.criterion import outputs_log_softmax_of_logits
from support.loss_reference import criterion_reference
from support.tiny_model import build, random_sample

EPS = 0.1


class KnownOutputModel(torch.nn.Module):
    """Row i of the (possibly stacked) batch gets the fixed logits ``logits[i]``, so the two
    copies of a duplicated batch get different, known outputs, as two dropout masks would."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())
        self.batch_sizes = []

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        self.batch_sizes.append(src_tokens.size(0))
        return self.logits[: src_tokens.size(0), : prev_output_tokens.size(1)], {"attn": None}

    def get_targets(self, sample, net_output):
        return sample["target"]

    def get_normalized_probs(self, net_output, log_probs):
        assert log_probs
        return F.log_softmax(net_output[0].float(), dim=-1)

    def set_num_updates(self, num_updates):
        pass


class _NoEncoder(FairseqEncoder):
    def forward(self, src_tokens, src_lengths=None, **kwargs):
        return None


class _KnownOutputDecoder(FairseqDecoder):
    def __init__(self, dictionary, logits):
        super().__init__(dictionary)
        self.logits = torch.nn.Parameter(logits.clone())
        self.batch_sizes = []

    def forward(self, prev_output_tokens, encoder_out=None, **kwargs):
        self.batch_sizes.append(prev_output_tokens.size(0))
        return self.logits[: prev_output_tokens.size(0), : prev_output_tokens.size(1)], {
            "attn": None
        }


class KnownOutputFairseqModel(FairseqEncoderDecoderModel):
    """KnownOutputModel as a fairseq model with the default output layer (log-softmax of the
    logits), whose loss the criterion computes from the logits."""

    def __init__(self, dictionary, logits):
        super().__init__(_NoEncoder(dictionary), _KnownOutputDecoder(dictionary, logits))

    @property
    def logits(self):
        return self.decoder.logits

    @property
    def batch_sizes(self):
        return self.decoder.batch_sizes


def make_model(kind, dictionary, logits):
    if kind == "logits":
        return KnownOutputFairseqModel(dictionary, logits)
    return KnownOutputModel(logits)


@pytest.fixture(params=["logits", "log_probs"])
def kind(request):
    return request.param


def make_criterion(alpha=5.0, prefix=0, sentence_avg=False, report_accuracy=False, loss="rdrop"):
    task = SimpleNamespace(target_dictionary=Dictionary())
    return RDrop(
        task, sentence_avg, EPS, prefix, report_accuracy, rdrop_alpha=alpha, rdrop_loss=loss
    )


def known_setup(kind="log_probs", bsz=3, tgt_len=6, vocab=11, seed=0):
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    sample = random_sample(d, bsz=bsz, tgt_len=tgt_len, seed=seed)
    logits = torch.randn(2 * bsz, tgt_len, len(d), generator=torch.Generator().manual_seed(seed))
    model = make_model(kind, d, logits)
    assert outputs_log_softmax_of_logits(model) == (kind == "logits")
    return d, sample, model


def reduced(logging_outputs):
    with metrics.aggregate() as agg:
        RDrop.reduce_metrics(logging_outputs)
        return agg.get_smoothed_values()


@pytest.mark.parametrize("prefix", [0, 1])
def test_loss_sample_size_and_metrics_match_from_scratch(prefix, kind):
    d, sample, model = known_setup(kind)
    crit = make_criterion(alpha=5.0, prefix=prefix)
    model.train()
    loss, sample_size, log = crit(model, sample)
    ref_loss, ref_nll, ref_kl = (
        x.item()
        for x in criterion_reference(
            model.logits.detach(), sample["target"], d.pad(), EPS, 5.0, prefix=prefix
        )
    )

    assert model.batch_sizes == [2 * sample["nsentences"]]
    assert sample_size == sample["ntokens"]  # ONE copy's target tokens
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert log["kl_loss"].item() == pytest.approx(ref_kl, rel=1e-5)
    values = reduced([log])
    ln2 = math.log(2)
    assert values["loss"] == pytest.approx(ref_loss / sample_size / ln2, abs=1e-3)
    # nll_loss and kl_loss per target token of one copy, comparable to validation figures
    # (divided by the sample's ntokens even with --ignore-prefix-size, as the stock criterion does)
    assert values["nll_loss"] == pytest.approx(ref_nll / 2 / sample["ntokens"] / ln2, abs=1e-3)
    assert values["kl_loss"] == pytest.approx(ref_kl / sample["ntokens"] / ln2, abs=1e-3)


def test_gradient_matches_from_scratch_autograd(kind):
    d, sample, model = known_setup(kind)
    crit = make_criterion(alpha=3.0)
    model.train()
    loss, _, _ = crit(model, sample)
    loss.backward()
    logits = model.logits.detach().double().requires_grad_()
    criterion_reference(logits, sample["target"], d.pad(), EPS, 3.0)[0].backward()
    torch.testing.assert_close(model.logits.grad.double(), logits.grad, rtol=1e-5, atol=1e-6)


def test_sentence_avg_and_accuracy(kind):
    d, sample, model = known_setup(kind)
    crit = make_criterion(sentence_avg=True, report_accuracy=True)
    model.train()
    _, sample_size, log = crit(model, sample)
    assert sample_size == sample["nsentences"]
    assert log["nsentences"] == sample["nsentences"]
    preds = model.logits.detach().argmax(-1)
    mask = sample["target"].ne(d.pad()).repeat(2, 1)
    target2 = sample["target"].repeat(2, 1)
    assert log["total"] == int(mask.sum())
    assert log["n_correct"] == int((preds.eq(target2) & mask).sum())


def test_simcut_reports_the_accuracy_of_the_clean_copy(kind):
    d, sample, model = known_setup(kind)
    crit = make_criterion(alpha=3.0, report_accuracy=True, loss="simcut")
    model.train()
    _, _, log = crit(model, sample)
    bsz = sample["target"].size(0)
    preds = model.logits.detach()[:bsz].argmax(-1)
    mask = sample["target"].ne(d.pad())
    assert log["total"] == int(mask.sum())
    assert log["n_correct"] == int((preds.eq(sample["target"]) & mask).sum())


def test_extra_padding_changes_nothing(kind):
    d, sample, model = known_setup(kind)
    crit = make_criterion()
    model.train()
    loss, size, _ = crit(model, sample)
    loss.backward()

    padded = copy.deepcopy(sample)
    extra = torch.full((sample["nsentences"], 3), d.pad())
    padded["target"] = torch.cat([sample["target"], extra], 1)
    padded["net_input"]["prev_output_tokens"] = torch.cat(
        [sample["net_input"]["prev_output_tokens"], extra], 1
    )
    garbage = 100 * torch.randn(model.logits.size(0), 3, model.logits.size(2))
    padded_model = make_model(kind, d, torch.cat([model.logits.detach(), garbage], 1))
    padded_model.train()
    padded_loss, padded_size, _ = crit(padded_model, padded)
    padded_loss.backward()

    assert padded_size == size
    torch.testing.assert_close(padded_loss, loss)
    torch.testing.assert_close(padded_model.logits.grad[:, :-3], model.logits.grad)
    assert padded_model.logits.grad[:, -3:].abs().max() == 0


def test_validation_is_stock_one_copy_no_kl():
    d, sample, model = known_setup()
    model.eval()
    ours = make_criterion()(model, sample)
    stock = LabelSmoothedCrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False, EPS)(
        model, sample
    )
    assert model.batch_sizes == [sample["nsentences"]] * 2
    assert torch.equal(ours[0], stock[0]) and ours[1] == stock[1]
    assert "kl_loss" not in ours[2]
    assert ours[2].keys() == stock[2].keys()


def test_criterion_duplicates_an_unduplicated_batch_once(tmp_path):
    d, sample, model = known_setup()
    crit = make_criterion()
    model.train()
    crit(model, sample)  # e.g. --task translation: the criterion duplicates by itself
    _, task, _, _ = build(tmp_path)
    before = copy.deepcopy(sample)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    task.train_step(sample, model, crit, optimizer, update_num=0)
    n = sample["nsentences"]
    assert model.batch_sizes == [2 * n, 2 * n]  # never 4n
    for key in ("target",):
        assert torch.equal(sample[key], before[key])
    for key, value in before["net_input"].items():
        assert torch.equal(sample["net_input"][key], value)
    assert sample.keys() == before.keys()  # the caller's sample is not mutated


def test_alpha_zero_trains_bit_for_bit_like_stock(tmp_path):
    d_stock = tmp_path / "stock"
    d_ours = tmp_path / "ours"
    d_stock.mkdir(), d_ours.mkdir()
    _, stock_task, stock_model, stock_crit = build(
        d_stock, task="translation", criterion="label_smoothed_cross_entropy"
    )
    _, our_task, our_model, our_crit = build(d_ours, extra=["--rdrop-alpha", "0"])
    our_model.load_state_dict(stock_model.state_dict())
    sample = random_sample(stock_task.target_dictionary, bsz=4, tgt_len=7, src_len=6)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    results = []
    for task, model, crit in [
        (stock_task, stock_model, stock_crit),
        (our_task, our_model, our_crit),
    ]:
        torch.manual_seed(123)  # same dropout masks
        results.append(task.train_step(sample, model, crit, optimizer, update_num=0))
    (stock_loss, stock_size, stock_log), (loss, size, log) = results
    assert torch.equal(loss, stock_loss) and size == stock_size
    assert log.keys() == stock_log.keys()
    for (name, p), q in zip(our_model.named_parameters(), stock_model.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_rdrop_task_with_real_transformer_trains_on_two_copies(tmp_path):
    _, task, model, crit = build(tmp_path, extra=["--rdrop-alpha", "5"])
    assert outputs_log_softmax_of_logits(model)  # fairseq's Transformer: the loss from logits
    sample = random_sample(task.target_dictionary, bsz=4, tgt_len=7, src_len=6)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    loss, size, log = task.train_step(sample, model, crit, optimizer, update_num=0)
    assert size == sample["ntokens"] and log["nsentences"] == 4
    assert log["kl_loss"] > 0  # dropout made the two copies differ
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_rdrop_task_rejects_a_foreign_criterion(tmp_path):
    with pytest.raises(ValueError, match="label_smoothed_cross_entropy_rdrop"):
        build(tmp_path, criterion="label_smoothed_cross_entropy")


@pytest.mark.parametrize("loss", ["rdrop", "simcut"])
def test_logits_and_log_probs_paths_agree_on_a_real_transformer(tmp_path, monkeypatch, loss):
    _, task, model, crit = build(
        tmp_path, extra=["--ignore-prefix-size", "1", "--report-accuracy", "--rdrop-loss", loss]
    )
    assert crit.simcut == (loss == "simcut")
    sample = random_sample(task.target_dictionary, bsz=4, tgt_len=7, src_len=6)
    model.train()
    results = {}
    for from_logits in (True, False):
        monkeypatch.setattr(
            "rdrop_fairseq.criterion.outputs_log_softmax_of_logits",
            lambda model, from_logits=from_logits: from_logits,
        )
        torch.manual_seed(0)  # the same dropout masks
        model.zero_grad()
        loss, size, log = crit(model, sample)
        loss.backward()
        results[from_logits] = (loss, size, log, [p.grad.clone() for p in model.parameters()])
    (loss, size, log, grads), (g_loss, g_size, g_log, g_grads) = results[True], results[False]
    torch.testing.assert_close(loss, g_loss)
    assert size == g_size and log.keys() == g_log.keys()
    for key in ("nll_loss", "kl_loss", "n_correct", "total"):
        assert float(log[key]) == pytest.approx(float(g_log[key]), rel=1e-5), key
    for grad, g_grad in zip(grads, g_grads):
        torch.testing.assert_close(grad, g_grad, rtol=1e-4, atol=1e-6)


def test_adaptive_softmax_or_custom_output_layers_take_the_log_probs_path(tmp_path):
    _, _, model, _ = build(tmp_path)
    assert outputs_log_softmax_of_logits(model)
    model.decoder.adaptive_softmax = torch.nn.Identity()
    assert not outputs_log_softmax_of_logits(model)
