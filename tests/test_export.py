"""rdrop-export: a model trained with the plugin, exported for fairseq without the
plugin (no --user-dir, torch's safe unpickler) and for CTranslate2, computes as the original.

The model is trained for one update: the export must keep the weights and the computation
whatever they are, so the checks compare what the models compute rather than how well they
translate. A model this untrained repeats words up to the length limit, and its beam search
meets near ties where two implementations that compute the same probabilities up to float
rounding can pick different words: fairseq and CTranslate2 are compared by the log-probability
each gives every token of the same hypotheses, not by the text of their translations."""

import contextlib
import dataclasses
import io
import logging
import math
import os
import sys

import numpy as np
import pytest
import torch

from rdrop_tools import export_checkpoint, translate_ctranslate2
from support import BIN, USER_DIR, run_cli
from support.crafted import OPEN, RunsCode
from support.training import fairseq_train

EXPORT = BIN / "rdrop-export"
TEST_SENTENCES = 20  # the synthetic corpus' test split
# one batch for all the test sentences, whichever command reads them; an untrained model's
# hypotheses stop at the length limit, here 25 tokens rather than fairseq's 200
DECODING = [
    "--beam",
    "5",
    "--batch-size",
    "50",
    "--required-batch-size-multiple",
    "1",
    "--max-len-a",
    "0",
    "--max-len-b",
    "25",
    "--cpu",
]
# no data-loading worker process: one left to the garbage collector in this process costs 5 s
GENERATE = ["--gen-subset", "test", "--num-workers", "0", *DECODING]
# Runs a fairseq module as a command in an interpreter where the plugin cannot be imported.
PLAIN_FAIRSEQ = (
    "import runpy, sys; sys.modules['rdrop_fairseq'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)
# The same, after loading the checkpoint argv[1] with torch's safe unpickler and with
# load_model_ensemble_and_task (what they found on a line of its own): one interpreter for both.
PLAIN_LOAD_THEN_RUN = """
import runpy, sys
sys.modules["rdrop_fairseq"] = None
import torch
from fairseq import checkpoint_utils
torch.load(sys.argv[1], weights_only=True)
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]])
print("loaded:", type(task).__name__, cfg.task._name, cfg.criterion._name,
      len(task.source_dictionary), flush=True)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
ARCHITECTURE = [
    "--arch",
    "transformer",
    "--share-all-embeddings",
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "1",
    "--encoder-embed-dim",
    "64",
    "--decoder-embed-dim",
    "64",
    "--encoder-ffn-embed-dim",
    "128",
    "--decoder-ffn-embed-dim",
    "128",
    "--encoder-attention-heads",
    "4",
    "--decoder-attention-heads",
    "4",
    "--dropout",
    "0.1",
]


def plain_fairseq(module, *args):
    return run_cli(sys.executable, "-c", PLAIN_FAIRSEQ, module, *args)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as the commands run_cli starts: the same arithmetic (bit for bit),
    and no crawling multi-threaded tiny model when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def plugin_generate(*args):
    """fairseq-generate, with the plugin, in this process on one thread: what it prints. The
    random generators and the root logger are left as they were."""
    from fairseq import options
    from fairseq_cli import generate

    parser = options.get_generation_parser()
    parser.add_argument("--arch", "-a", default="wav2vec2")  # as fairseq-generate's cli_main
    cfg = options.parse_args_and_arch(parser, [str(a) for a in args])
    root, text = logging.getLogger(), io.StringIO()
    handlers, level, numpy_state = list(root.handlers), root.level, np.random.get_state()
    try:
        with one_thread(), torch.random.fork_rng(), contextlib.redirect_stdout(text):
            generate.main(cfg)
    finally:
        np.random.set_state(numpy_state)
        for handler in set(root.handlers) - set(handlers):  # its logging.basicConfig
            root.removeHandler(handler)
        root.setLevel(level)
    return text.getvalue()


@pytest.fixture(scope="module")
def test_set(corpus):
    """The synthetic corpus' binarized test split and its tokenized source sentences."""
    sources = (corpus.tok / "test.de").read_text(encoding="utf-8").splitlines()
    assert len(sources) == TEST_SENTENCES
    return corpus.bin, sources


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny Transformer trained with R-Drop through the plugin for one update, in this
    process: a checkpoint as fairseq-train writes it (weights, optimizer state, the plugin's
    task and criterion in its config)."""
    save = tmp_path_factory.mktemp("export-checkpoints")
    with one_thread():
        run = fairseq_train(
            corpus.bin,
            "--user-dir",
            USER_DIR,
            "--task",
            "rdrop_translation",
            "--criterion",
            "label_smoothed_cross_entropy_rdrop",
            "--rdrop-alpha",
            "1",
            "--label-smoothing",
            "0.1",
            *ARCHITECTURE,
            "--optimizer",
            "adam",
            "--lr",
            "5e-3",
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            "50",
            "--max-tokens",
            "2048",
            "--max-update",
            "1",
            "--seed",
            "1",
            "--cpu",
            "--num-workers",
            "0",
            "--save-dir",
            save,
            "--no-epoch-checkpoints",
            "--disable-validation",
            "--save-interval",
            "1000",
        )
    assert run.error is None, run.output[-3000:]
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def exported(trained, corpus, tmp_path_factory):
    """The export, run as users run it, with a float32 CTranslate2 model."""
    out = tmp_path_factory.mktemp("export")
    result = run_cli(
        EXPORT, trained, out / "model.pt", "--data", corpus.bin, "--ctranslate2", out / "ct2"
    )
    assert sorted(os.listdir(out)) == ["ct2", "model.pt"]  # no temporary files left
    return out / "model.pt", out / "ct2", result


def hypotheses(generate_output):
    """{sentence id: (H line, P line)} from fairseq-generate's or fairseq-interactive's output."""
    found = {}
    for line in generate_output.splitlines():
        if line[:2] in ("H-", "P-"):
            sentence = int(line.split("\t")[0][2:])
            found.setdefault(sentence, []).append(line)
    return found


def texts(found):
    return [found[i][0].split("\t")[2] for i in sorted(found)]


def token_log_probs(found):
    """The P lines' per-token scores (fairseq prints them in bits, to 4 decimals), in nats."""
    return [
        np.array([float(s) for s in found[i][1].split("\t")[1].split()]) * math.log(2)
        for i in sorted(found)
    ]


@pytest.fixture(scope="module")
def fairseq_translations(trained, exported, test_set):
    """Beam-5 translations of the test set: the original through the plugin (in this process),
    the export through plain fairseq-generate."""
    data, _ = test_set
    original = plugin_generate(data, "--user-dir", USER_DIR, "--path", trained, *GENERATE)
    export = plain_fairseq("fairseq_cli.generate", data, "--path", exported[0], *GENERATE)
    return hypotheses(original), hypotheses(export.stdout)


def test_export_holds_only_weights_and_a_plain_stock_config(trained, exported):
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY

    import rdrop_fairseq  # noqa: F401  (the original needs the plugin)

    original = torch.load(trained, weights_only=False)
    export = torch.load(exported[0], weights_only=True)
    assert "last_optimizer_state" in original and "last_optimizer_state" not in export
    assert export["args"] is None
    assert export["model"].keys() == original["model"].keys()
    assert all(torch.equal(export["model"][k], v) for k, v in original["model"].items())

    def leaves(value, where="cfg"):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from leaves(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from leaves(v, f"{where}[{i}]")
        else:
            yield where, value

    cfg = export["cfg"]
    odd = [
        (w, type(v))
        for w, v in leaves(cfg)
        if type(v) not in (str, int, float, bool) and v is not None
    ]
    assert odd == []
    assert cfg["task"]["_name"] == "translation"
    assert cfg["criterion"]["_name"] == "label_smoothed_cross_entropy"
    assert cfg["model"]["task"] == "translation" and cfg["common"]["user_dir"] is None
    fields = {
        name: {f.name for f in dataclasses.fields(CRITERION_DATACLASS_REGISTRY[name])}
        for name in ("label_smoothed_cross_entropy_rdrop", "label_smoothed_cross_entropy")
    }
    plugin_only = (
        fields["label_smoothed_cross_entropy_rdrop"] - fields["label_smoothed_cross_entropy"]
    )
    assert "rdrop_alpha" in plugin_only
    assert plugin_only.isdisjoint(cfg["criterion"]) and plugin_only.isdisjoint(cfg["model"])
    assert cfg["criterion"]["label_smoothing"] == 0.1
    assert "rdrop" not in repr(cfg).replace("layerdrop", "")


def test_plain_fairseq_generate_translates_bit_for_bit_as_the_plugin(fairseq_translations):
    original, export = fairseq_translations
    assert sorted(export) == list(range(TEST_SENTENCES))
    assert export == original  # hypotheses, scores and positional scores
    assert all(texts(export))
    # each sentence its own positional scores: what is compared depends on the input
    assert len({lines[1] for lines in export.values()}) == TEST_SENTENCES


def test_plain_fairseq_interactive_and_load_model_ensemble(
    exported, corpus, test_set, fairseq_translations, tmp_path
):
    _, sources = test_set
    (tmp_path / "input.de").write_text("\n".join(sources) + "\n", encoding="utf-8")
    interactive = run_cli(
        sys.executable,
        "-c",
        PLAIN_LOAD_THEN_RUN,
        exported[0],
        "fairseq_cli.interactive",
        corpus.bin,
        "--path",
        exported[0],
        *DECODING,
        "--buffer-size",
        "50",
        "--input",
        tmp_path / "input.de",
    )
    found = hypotheses(interactive.stdout)
    assert texts(found) == texts(fairseq_translations[1])
    expected = token_log_probs(fairseq_translations[1])
    assert all(
        np.allclose(a, b, rtol=0, atol=1e-3) for a, b in zip(token_log_probs(found), expected)
    )
    (loaded,) = [line for line in interactive.stdout.splitlines() if line.startswith("loaded:")]
    _, task, task_name, criterion, vocabulary = loaded.split()
    assert (task, task_name, criterion) == (
        "TranslationTask",
        "translation",
        "label_smoothed_cross_entropy",
    )
    assert int(vocabulary) == sum(1 for _ in open(corpus.bin / "dict.de.txt")) + 4


def ctranslate2_translations(model_dir, sources, tmp_path):
    """rdrop-translate-ct2 on tokenized ``sources``: one thread, beam 5."""
    (tmp_path / "sources.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    run_cli(
        BIN / "rdrop-translate-ct2",
        model_dir,
        "--input",
        tmp_path / "sources.txt",
        "--output",
        tmp_path / "ct2.txt",
        "--threads",
        "1",
        "--batch-size",
        "50",
    )
    return (tmp_path / "ct2.txt").read_text(encoding="utf-8").splitlines()


def ctranslate2_log_probs(model_dir, sources, found):
    """The log-probability (nats) a CTranslate2 model gives each token of fairseq's hypotheses
    ``found`` of ``sources``, end of sentence included, as fairseq's P lines list them."""
    import ctranslate2

    translator = ctranslate2.Translator(str(model_dir), device="cpu", intra_threads=1)
    results = translator.score_batch(
        [s.split() for s in sources], [t.split() for t in texts(found)]
    )
    return [np.array(r.log_probs) for r in results]


def test_ctranslate2_float32_computes_as_fairseq(
    exported, test_set, fairseq_translations, tmp_path
):
    """The float32 model translates every line, and gives every token of fairseq's beam-5
    hypotheses the log-probability fairseq gave it, to 2e-4 nats. Measured on 38 models (1 to
    100 updates, seeds 1 to 4): at most 5e-5 (fairseq prints bits to 4 decimals, 3.5e-5 nats),
    while CTranslate2's text agreed with fairseq's on 54 % to 100 % of the lines (near ties);
    one encoder bias vector of this model scaled by 1.01 moves a log-probability by 4e-4."""
    _, sources = test_set
    translations = ctranslate2_translations(exported[1], sources, tmp_path)
    assert len(translations) == len(sources) and all(translations)
    fairseq = token_log_probs(fairseq_translations[1])
    ct2 = ctranslate2_log_probs(exported[1], sources, fairseq_translations[1])
    assert [len(p) for p in ct2] == [len(p) for p in fairseq]
    worst = max(np.abs(a - b).max() for a, b in zip(ct2, fairseq))
    assert worst <= 2e-4, worst


def test_ctranslate2_int8_is_smaller_and_computes_close_to_float32(
    trained, exported, corpus, test_set, fairseq_translations, tmp_path, monkeypatch
):
    """--quantization int8: int8 matrices, a model that translates every line, and per-token
    log-probabilities of fairseq's hypotheses within a few hundredths of a nat of the float32
    model's. Measured on the 38 models of the float32 test: mean difference at most 0.0074 nats,
    largest 0.084 (the same with CTranslate2's MKL and oneDNN int8 GEMM), while the int8 and
    float32 texts agreed on 0 % to 100 % of the lines (near ties)."""
    _, sources = test_set
    # the command line of the exported fixture has run this check, before any conversion
    monkeypatch.setattr(export_checkpoint, "check_plain_fairseq_loads", lambda path: None)
    export_checkpoint.main(
        [
            str(trained),
            str(tmp_path / "model.pt"),
            "--data",
            str(corpus.bin),
            "--ctranslate2",
            str(tmp_path / "int8"),
            "--quantization",
            "int8",
        ]
    )
    weights = [os.path.getsize(d / "model.bin") for d in (exported[1], tmp_path / "int8")]
    assert weights[1] < 0.75 * weights[0]  # int8 matrices (the position table stays float)
    (tmp_path / "sources.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    translate_ctranslate2.main(
        [
            str(tmp_path / "int8"),
            "--input",
            str(tmp_path / "sources.txt"),
            "--output",
            str(tmp_path / "int8.txt"),
            "--threads",
            "1",
            "--beam",
            "1",  # this model's lines run to 200 words: greedy is 5 times faster
        ]
    )
    translations = (tmp_path / "int8.txt").read_text(encoding="utf-8").splitlines()
    assert len(translations) == len(sources) and all(translations)
    found = fairseq_translations[1]
    float32 = np.concatenate(ctranslate2_log_probs(exported[1], sources, found))
    int8 = np.concatenate(ctranslate2_log_probs(tmp_path / "int8", sources, found))
    assert float32.std() > 0.5  # the model's predictions differ: the bounds mean something
    difference = np.abs(int8 - float32)
    assert 0 < difference.mean() <= 0.03 and difference.max() <= 0.3, difference


# -- bad input: one error line, a non-zero exit, nothing written --------------------------------


def run_export(*args):
    with pytest.raises(SystemExit) as exit_info:
        export_checkpoint.main([str(a) for a in args])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_a_missing_checkpoint_is_one_error_line(corpus, tmp_path):
    result = run_cli(
        EXPORT, tmp_path / "missing.pt", tmp_path / "out.pt", "--data", corpus.bin, check=False
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'missing.pt'} does not exist"]
    assert os.listdir(tmp_path) == []


def torch_file_without_model(path):
    torch.save({"weights": torch.zeros(2)}, path)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_text("not a checkpoint\n"),
        lambda p: p.write_bytes(b""),
        torch_file_without_model,
    ],
)
def test_a_file_that_is_not_a_fairseq_checkpoint(make, corpus, tmp_path):
    make(tmp_path / "in.pt")
    message = run_export(
        tmp_path / "in.pt",
        tmp_path / "out.pt",
        "--data",
        corpus.bin,
        "--ctranslate2",
        tmp_path / "ct2",
    )
    assert str(tmp_path / "in.pt") in message
    assert os.listdir(tmp_path) == ["in.pt"]


def test_data_without_the_dictionaries(trained, tmp_path):
    (tmp_path / "data").mkdir()
    message = run_export(trained, tmp_path / "out.pt", "--data", tmp_path / "data")
    assert "dict" in message
    (tmp_path / "other").mkdir()
    for lang in ("de", "en"):
        (tmp_path / "other" / f"dict.{lang}.txt").write_text("a 1\nb 1\n")
    message = run_export(
        trained,
        tmp_path / "out.pt",
        "--data",
        tmp_path / "other",
        "--ctranslate2",
        tmp_path / "ct2",
    )
    assert "not the model's dictionary" in message
    message = run_export(trained, tmp_path / "out.pt", "--data", tmp_path / "missing")
    assert "does not exist" in message
    assert sorted(os.listdir(tmp_path)) == ["data", "other"]


def test_data_with_reordered_dictionaries(trained, corpus, tmp_path):
    """Same size, another order: refused by the fingerprint the checkpoint records."""
    (tmp_path / "data").mkdir()
    for lang in ("de", "en"):
        lines = (corpus.bin / f"dict.{lang}.txt").read_text(encoding="utf-8").splitlines(True)
        (tmp_path / "data" / f"dict.{lang}.txt").write_text(
            "".join([lines[1], lines[0], *lines[2:]])
        )
    message = run_export(trained, tmp_path / "out.pt", "--data", tmp_path / "data")
    assert message == (
        f"error: checkpoint {trained} was trained with another source dictionary "
        f"than {tmp_path / 'data' / 'dict.de.txt'} (the same symbols in another "
        "order): use the data directory it was trained on (or binarize new data "
        "with its dictionaries: fairseq-preprocess --srcdict/--tgtdict)"
    )
    assert os.listdir(tmp_path) == ["data"]


def test_an_existing_ctranslate2_directory_is_left_alone(trained, corpus, tmp_path):
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "keep").write_text("x")
    message = run_export(
        trained, tmp_path / "out.pt", "--data", corpus.bin, "--ctranslate2", tmp_path / "ct2"
    )
    assert "exists" in message
    assert sorted(os.listdir(tmp_path)) == ["ct2"] and os.listdir(tmp_path / "ct2") == ["keep"]


def test_a_failed_conversion_leaves_nothing(trained, corpus, tmp_path, monkeypatch):
    module = export_checkpoint

    def fail(checkpoint, *args):
        assert os.path.isfile(checkpoint)  # the checkpoint was written, then the conversion fails
        raise module.ToolError("conversion failed")

    monkeypatch.setattr(module, "convert_to_ctranslate2", fail)
    # the check before the conversion (a fairseq process of its own: the exported fixture runs it)
    monkeypatch.setattr(module, "check_plain_fairseq_loads", lambda path: None)
    with pytest.raises(SystemExit) as exit_info:
        module.main(
            [
                str(trained),
                str(tmp_path / "out.pt"),
                "--data",
                str(corpus.bin),
                "--ctranslate2",
                str(tmp_path / "ct2"),
            ]
        )
    assert exit_info.value.code == "error: conversion failed"
    assert os.listdir(tmp_path) == []


def test_translating_with_a_missing_ctranslate2_model_is_one_error_line(tmp_path):
    (tmp_path / "src.txt").write_text("a b\n", encoding="utf-8")
    proc = run_cli(
        BIN / "rdrop-translate-ct2",
        tmp_path / "no-model",
        "--input",
        tmp_path / "src.txt",
        "--output",
        tmp_path / "hyp.txt",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith(f"error: {tmp_path / 'no-model'}: cannot load a CTranslate2")
    assert not (tmp_path / "hyp.txt").exists()


@pytest.mark.parametrize("name", ["same", "symlink", "hardlink"])
def test_never_overwrites_its_input(trained, corpus, tmp_path, name):
    source = tmp_path / "checkpoint_last.pt"
    source.write_bytes(trained.read_bytes())
    output = {"same": source, "symlink": tmp_path / "link.pt", "hardlink": tmp_path / "hard.pt"}[
        name
    ]
    if name == "symlink":
        output.symlink_to(source)
    if name == "hardlink":
        os.link(source, output)
    message = run_export(source, output, "--data", corpus.bin)
    assert message == f"error: {output} is the input {source}: write the output to another file"
    assert source.read_bytes() == trained.read_bytes()


def test_never_overwrites_the_dictionary(trained, corpus, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dict.de.txt", "dict.en.txt"):
        (data / name).write_bytes((corpus.bin / name).read_bytes())
    message = run_export(trained, data / "dict.en.txt", "--data", data)
    assert message == (
        f"error: {data / 'dict.en.txt'} is the input {data / 'dict.en.txt'}: "
        "write the output to another file"
    )
    assert (data / "dict.en.txt").read_bytes() == (corpus.bin / "dict.en.txt").read_bytes()


def test_a_checkpoint_carrying_code_runs_nothing(trained, corpus, tmp_path):
    state = torch.load(trained, weights_only=False)
    state["extra_state"]["payload"] = RunsCode(tmp_path / "ran")
    torch.save(state, tmp_path / "in.pt")
    message = run_export(tmp_path / "in.pt", tmp_path / "out.pt", "--data", corpus.bin)
    assert message.startswith(
        f"error: checkpoint {tmp_path / 'in.pt'} holds {OPEN}, which the safe loader does not allow"
    )
    assert os.listdir(tmp_path) == ["in.pt"]


def test_a_missing_output_directory(trained, corpus, tmp_path):
    message = run_export(trained, tmp_path / "no" / "out.pt", "--data", corpus.bin)
    assert (
        message
        == f"error: {tmp_path / 'no' / 'out.pt'}: directory {tmp_path / 'no'} does not exist"
    )
    assert os.listdir(tmp_path) == []


def test_the_conversion_reads_a_copy_and_leaves_torch_load_alone(tmp_path, monkeypatch):
    """CTranslate2's converter gets a checkpoint whose ``args`` it can read, with torch's safe
    unpickler and torch.load as they are; nothing else in the process sees a changed torch."""
    import argparse

    from ctranslate2 import converters

    export = tmp_path / "model.pt"
    torch.save(
        {
            "cfg": {"model": {"arch": "transformer", "dropout": 0.1}},
            "args": None,
            "model": {"w": torch.ones(2)},
        },
        export,
    )
    (tmp_path / "ct2").mkdir()
    load, seen = torch.load, {}

    class Converter:
        def __init__(self, path, data, source_lang, target_lang):
            seen["path"] = path

        def convert(self, out_dir, quantization, force):
            seen["same torch.load"] = torch.load is load
            state = torch.load(seen["path"], map_location="cpu", weights_only=True)
            seen["args"], seen["weights"] = state["args"], state["model"]["w"]

    monkeypatch.setattr(converters, "FairseqConverter", Converter)
    export_checkpoint.convert_to_ctranslate2(
        str(export), str(tmp_path), "de", "en", str(tmp_path / "ct2"), None
    )
    assert seen["same torch.load"] and torch.load is load
    assert seen["args"] == argparse.Namespace(arch="transformer", dropout=0.1)
    assert torch.equal(seen["weights"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["ct2", "model.pt"]  # the copy is gone
    torch.save({"args": argparse.Namespace(a=1)}, tmp_path / "namespace.pt")
    with pytest.raises(Exception, match="argparse.Namespace"):  # the allowlist as it was
        torch.load(tmp_path / "namespace.pt", weights_only=True)
