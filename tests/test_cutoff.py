"""Token cutoff of the second copy (R-Drop + Cutoff) and SimCut's loss, against SimCut's own
embedding code re-implemented here and the float64 loss reference, with a fixed cut mask."""

from types import SimpleNamespace

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

import rdrop_fairseq.cutoff as cutoff
from rdrop_fairseq.errors import UsageError
from rdrop_fairseq.sample import duplicate_sample
from support import USER_DIR
from support.loss_reference import criterion_reference
from support.tiny_model import build, random_sample, train_args
from support.training import fairseq_train

EPS = 0.1


def left_padded_sample(d, bsz=4, src_len=6, tgt_len=7, seed=0):
    """random_sample with fairseq's collated source: left-padded, ending with EOS."""
    sample = random_sample(d, bsz=bsz, src_len=src_len, tgt_len=tgt_len, seed=seed)
    src = sample["net_input"]["src_tokens"]
    src[:, -1] = d.eos()
    for i in range(1, bsz):
        src[i, : min(i, src_len - 2)] = d.pad()
    sample["net_input"]["src_lengths"] = src.ne(d.pad()).sum(1)
    return sample


def fixed_draw(seed=1, p=0.5):
    """A cut mask that depends only on the tokens' shape and the seed, and records its calls."""
    calls = []

    def draw(tokens, prob):
        calls.append(tokens.shape)
        g = torch.Generator().manual_seed(seed + len(calls))
        return torch.rand(tokens.shape, generator=g) < p

    draw.calls = calls
    return draw


def capture_layer_inputs(model):
    """The input of the first encoder and decoder layer (embedding + positions, after
    layernorm_embedding and dropout), as B x T x C."""
    seen = {}

    def keep(name):
        return lambda module, args: seen.__setitem__(name, args[0].transpose(0, 1).detach())

    handles = [
        model.encoder.layers[0].register_forward_pre_hook(keep("encoder")),
        model.decoder.layers[0].register_forward_pre_hook(keep("decoder")),
    ]
    return seen, handles


def simcut_embedding(module, tokens, keep):
    """SimCut's fairseq fork (forward_embedding / extract_features), dropout off:
    embed_scale·(keep ⊙ embed_tokens(tokens)) + positions, then layernorm_embedding."""
    x = module.embed_scale * (keep.unsqueeze(-1) * module.embed_tokens(tokens))
    x = x + module.embed_positions(tokens)
    if module.layernorm_embedding is not None:
        x = module.layernorm_embedding(x)
    return x


@pytest.fixture
def transformer(tmp_path):
    _, task, model, _ = build(tmp_path, extra=["--dropout", "0", "--layernorm-embedding"])
    model.train()
    return task, model


def test_cut_only_the_second_copy_and_never_eos_or_pad():
    d_eos, d_pad = 2, 1
    tokens = torch.tensor([[1, 5, 6, 2], [7, 8, 9, 2]]).repeat(2, 1)
    emb = torch.randn(4, 4, 3)
    out = cutoff.cut_second_copy(
        tokens, emb, 0.5, {d_eos, d_pad}, draw=lambda t, p: torch.ones_like(t, dtype=torch.bool)
    )
    assert torch.equal(out[:2], emb[:2])  # clean copy, bit for bit
    special = tokens[2:].eq(d_eos) | tokens[2:].eq(d_pad)
    assert torch.equal(out[2:][special], emb[2:][special])
    assert out[2:][~special].eq(0).all()
    with pytest.raises(ValueError, match="even"):
        cutoff.cut_second_copy(tokens[:3], emb[:3], 0.5, set())


def test_draw_cuts_with_probability_p():
    torch.manual_seed(0)
    mask = cutoff.draw_cut_mask(torch.zeros(400, 500, dtype=torch.long), 0.05)
    assert abs(mask.float().mean().item() - 0.05) < 0.003


def test_embeddings_equal_simcut_and_the_clean_copy_is_untouched(transformer, monkeypatch):
    task, model = transformer
    d = task.target_dictionary
    sample = duplicate_sample(left_padded_sample(d))
    src, prev = sample["net_input"]["src_tokens"], sample["net_input"]["prev_output_tokens"]
    seen, handles = capture_layer_inputs(model)
    clean_out = model(**sample["net_input"])[0]
    clean = dict(seen)
    draw = fixed_draw()
    monkeypatch.setattr(cutoff, "draw_cut_mask", draw)
    with cutoff.second_copy_cutoff(model, 0.5, {d.eos(), d.pad()}):
        cut_out = model(**sample["net_input"])[0]
    for h in handles:
        h.remove()
    assert len(draw.calls) == 2  # shared embeddings: one draw for the source, one for the target
    # the clean copy: bit for bit what a forward without cutoff gives
    b = src.size(0) // 2
    assert torch.equal(cut_out[:b], clean_out[:b])
    assert not torch.equal(cut_out[b:], clean_out[b:])
    for name in ("encoder", "decoder"):
        assert torch.equal(seen[name][:b], clean[name][:b])
    # the cut copy: SimCut's mask rule (keep the last source column, the first target column)
    src_keep = ~fixed_draw()(src[b:], 0.5)
    src_keep[:, -1] = True
    tgt_draw = fixed_draw()
    tgt_draw(src[b:], 0.5)  # the second call draws the target mask
    tgt_keep = ~tgt_draw(prev[b:], 0.5)
    tgt_keep[:, 0] = True
    assert not src_keep.all() and not tgt_keep.all()
    with torch.no_grad():
        ref_enc = simcut_embedding(model.encoder, src[b:], src_keep.float())
        ref_dec = simcut_embedding(model.decoder, prev[b:], tgt_keep.float())
    torch.testing.assert_close(seen["encoder"][b:], ref_enc, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["decoder"][b:], ref_dec, rtol=0, atol=1e-6)
    # the hooks are gone after the block
    assert torch.equal(model(**sample["net_input"])[0], clean_out)


@pytest.mark.parametrize("mode,alpha", [("rdrop", 5.0), ("simcut", 3.0)])
def test_loss_and_gradient_match_float64_with_a_fixed_cut_mask(tmp_path, monkeypatch, mode, alpha):
    _, task, model, crit = build(
        tmp_path, extra=["--rdrop-alpha", str(alpha), "--rdrop-cutoff", "0.3", "--rdrop-loss", mode]
    )
    d = task.target_dictionary
    sample = left_padded_sample(d, bsz=3)
    draw = fixed_draw()
    monkeypatch.setattr(cutoff, "draw_cut_mask", draw)
    logits = []
    model.decoder.register_forward_hook(lambda m, a, out: logits.append(out[0]))
    model.train()
    torch.manual_seed(5)
    loss, sample_size, log = crit(model, sample)
    assert len(draw.calls) == 2 and sample_size == sample["ntokens"]
    logits = logits[0]
    logits.retain_grad()
    loss.backward()
    leaf = logits.detach().double().requires_grad_(True)
    ref_loss, ref_nll, ref_kl = criterion_reference(
        leaf, sample["target"], d.pad(), EPS, alpha, mode
    )
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log["kl_loss"].double(), ref_kl.detach(), rtol=1e-5, atol=1e-5)
    copies = 1 if mode == "simcut" else 2
    torch.testing.assert_close(
        log["nll_loss"].double(), ref_nll.detach() / copies, rtol=1e-5, atol=1e-5
    )
    # gradients reach both copies (SimCut: through the clean and the cut distribution)
    torch.testing.assert_close(logits.grad.double(), leaf.grad, rtol=1e-4, atol=1e-6)
    b = sample["target"].size(0)
    assert logits.grad[:b].abs().sum() > 0 and logits.grad[b:].abs().sum() > 0


def test_cutoff_only_during_training(tmp_path, monkeypatch):
    _, task, model, crit = build(tmp_path, extra=["--rdrop-alpha", "5", "--rdrop-cutoff", "0.5"])
    stock = LabelSmoothedCrossEntropyCriterion(task, False, EPS)
    sample = left_padded_sample(task.target_dictionary)
    draw = fixed_draw()
    monkeypatch.setattr(cutoff, "draw_cut_mask", draw)
    model.eval()
    with torch.no_grad():
        ours, stock_out = crit(model, sample), stock(model, sample)
    assert draw.calls == []
    assert torch.equal(ours[0], stock_out[0]) and ours[2].keys() == stock_out[2].keys()
    assert not model.encoder.embed_tokens._forward_hooks  # nothing left installed
    model.train()
    crit(model, sample)
    assert len(draw.calls) == 2
    assert not model.encoder.embed_tokens._forward_hooks


def test_cutoff_zero_is_bit_for_bit_rdrop(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    _, task, model, plain = build(dirs[0], extra=["--rdrop-alpha", "5"])
    _, _, model2, zero = build(dirs[1], extra=["--rdrop-alpha", "5", "--rdrop-cutoff", "0"])
    model2.load_state_dict(model.state_dict())
    sample = left_padded_sample(task.target_dictionary)
    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    results = []
    for m, c in ((model, plain), (model2, zero)):
        torch.manual_seed(7)
        results.append(task.train_step(sample, m, c, optimizer, update_num=0)[0])
    assert torch.equal(*results)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan"])
def test_cutoff_outside_zero_one_is_a_usage_error(tmp_path, value):
    with pytest.raises(ValueError, match=r"--rdrop-cutoff must be a probability in \[0, 1\)"):
        build(tmp_path, extra=["--rdrop-alpha", "5", "--rdrop-cutoff", value])


def test_cutoff_needs_alpha(tmp_path):
    with pytest.raises(ValueError, match="--rdrop-cutoff needs --rdrop-alpha > 0"):
        build(tmp_path, extra=["--rdrop-alpha", "0", "--rdrop-cutoff", "0.1"])


def test_bad_cutoff_through_fairseq_train_is_one_error(tmp_path):
    """fairseq-train in this process: the UsageError its command line prints as ``error: ...``
    (that hook: tests/test_training_errors.py)."""
    run = fairseq_train(
        *train_args(
            tmp_path,
            extra=[
                "--user-dir",
                USER_DIR,
                "--rdrop-cutoff",
                "1.0",
                "--save-dir",
                tmp_path / "checkpoints",
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
    assert str(run.error) == "--rdrop-cutoff must be a probability in [0, 1), got 1.0"
