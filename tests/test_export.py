"""rdrop-export: a model trained with the plugin, exported for fairseq without the
plugin (no --user-dir, torch's safe unpickler) and for CTranslate2, translates as the original."""

import dataclasses
import os
import sys

import pytest
import sacrebleu
import torch

from rdrop_tools import export_checkpoint
from support import BIN, USER_DIR, run_cli
from support import corpus as synthetic_corpus
from support.crafted import OPEN, RunsCode

EXPORT = BIN / "rdrop-export"
TEST_SENTENCES = 200
GENERATE = [
    "--gen-subset",
    "test",
    "--beam",
    "5",
    "--batch-size",
    "50",
    "--required-batch-size-multiple",
    "1",
    "--cpu",
]
# Runs a fairseq module as a command in an interpreter where the plugin cannot be imported.
PLAIN_FAIRSEQ = (
    "import runpy, sys; sys.modules['rdrop_fairseq'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)
PLAIN_LOAD = """
import sys
sys.modules["rdrop_fairseq"] = None
import torch
from fairseq import checkpoint_utils
torch.load(sys.argv[1], weights_only=True)
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]])
print(type(task).__name__, cfg.task._name, cfg.criterion._name, len(task.source_dictionary))
"""


def plain_fairseq(module, *args):
    return run_cli(sys.executable, "-c", PLAIN_FAIRSEQ, module, *args)


@pytest.fixture(scope="module")
def test_set(corpus, tmp_path_factory):
    """200 held-out synthetic pairs, binarized with the training dictionaries."""
    root = tmp_path_factory.mktemp("export-test-set")
    pairs = synthetic_corpus.pairs(TEST_SENTENCES, seed=13)
    for lang in ("de", "en"):
        text = "".join(p.tokenized(lang, lowercase=True) + "\n" for p in pairs)
        (root / f"test.{lang}").write_text(text, encoding="utf-8")
    run_cli(
        BIN / "fairseq-preprocess",
        "-s",
        "de",
        "-t",
        "en",
        "--testpref",
        root / "test",
        "--srcdict",
        corpus.bin / "dict.de.txt",
        "--tgtdict",
        corpus.bin / "dict.en.txt",
        "--destdir",
        root / "bin",
        "--workers",
        "1",
    )
    sources = (root / "test.de").read_text(encoding="utf-8").splitlines()
    references = (root / "test.en").read_text(encoding="utf-8").splitlines()
    return root / "bin", sources, references


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny Transformer trained with R-Drop through the plugin: 300 updates (about a minute
    on one thread), enough to translate the synthetic corpus well (BLEU about 75)."""
    save = tmp_path_factory.mktemp("export-checkpoints")
    run_cli(
        BIN / "fairseq-train",
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
        "300",
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


@pytest.fixture(scope="module")
def fairseq_translations(trained, exported, test_set):
    """Beam-5 translations of the test set: the original through the plugin, the export
    through plain fairseq."""
    data, _, _ = test_set
    original = run_cli(
        BIN / "fairseq-generate", data, "--user-dir", USER_DIR, "--path", trained, *GENERATE
    )
    export = plain_fairseq("fairseq_cli.generate", data, "--path", exported[0], *GENERATE)
    return hypotheses(original.stdout), hypotheses(export.stdout)


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


def test_plain_fairseq_interactive_and_load_model_ensemble(
    exported, corpus, test_set, fairseq_translations, tmp_path
):
    data, sources, _ = test_set
    (tmp_path / "input.de").write_text("\n".join(sources[:20]) + "\n", encoding="utf-8")
    interactive = plain_fairseq(
        "fairseq_cli.interactive",
        corpus.bin,
        "--path",
        exported[0],
        "--beam",
        "5",
        "--buffer-size",
        "20",
        "--batch-size",
        "20",
        "--input",
        tmp_path / "input.de",
        "--cpu",
    )
    assert texts(hypotheses(interactive.stdout)) == texts(fairseq_translations[1])[:20]
    loaded = run_cli(sys.executable, "-c", PLAIN_LOAD, exported[0])
    task, task_name, criterion, vocabulary = loaded.stdout.split()
    assert (task, task_name, criterion) == (
        "TranslationTask",
        "translation",
        "label_smoothed_cross_entropy",
    )
    assert int(vocabulary) == sum(1 for _ in open(corpus.bin / "dict.de.txt")) + 4


def ctranslate2_translations(model_dir, sources, tmp_path, env=None):
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
        env=env,
    )
    return (tmp_path / "ct2.txt").read_text(encoding="utf-8").splitlines()


def test_ctranslate2_float32_agrees_with_fairseq(
    exported, test_set, fairseq_translations, tmp_path
):
    _, sources, _ = test_set
    fairseq = texts(fairseq_translations[1])
    ct2 = ctranslate2_translations(exported[1], sources, tmp_path)
    same = sum(a == b for a, b in zip(ct2, fairseq))
    assert same >= 0.99 * len(sources), f"{same}/{len(sources)} lines agree"


def test_ctranslate2_int8_bleu_within_half_a_point_of_fairseq(
    trained, exported, corpus, test_set, fairseq_translations, tmp_path
):
    _, sources, references = test_set
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
    fairseq = sacrebleu.corpus_bleu(texts(fairseq_translations[1]), [references]).score
    # Intel MKL's int8 GEMM, CTranslate2's default on Intel CPUs. On AMD CPUs it defaults to
    # oneDNN, whose int8 path without AVX-512 VNNI cost 3.4 BLEU on this model (MKL: +0.3).
    int8 = sacrebleu.corpus_bleu(
        ctranslate2_translations(tmp_path / "int8", sources, tmp_path, env={"CT2_USE_MKL": "1"}),
        [references],
    ).score
    assert fairseq > 40  # the model translates: the comparison means something
    assert abs(int8 - fairseq) <= 0.5, (int8, fairseq)


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
