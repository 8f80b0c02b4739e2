"""Checkpoints record their dictionaries; resuming, fairseq-generate and fairseq-validate refuse
data whose dictionaries were reordered or resized, in one line naming the checkpoint and the data;
a checkpoint without the record loads as before. The commands run in this process: the one line
is the message of the UsageError they end with, which the command line prints as ``error: ...``
(the command lines themselves: tests/test_training_errors.py)."""

import re
import shutil

import pytest
import torch
from fairseq.data import Dictionary

import rdrop_fairseq  # noqa: F401  (installs the fixes)
from rdrop_fairseq import dictionary_check
from rdrop_fairseq.errors import UsageError
from support import USER_DIR
from support.training import fairseq_command, fairseq_train, last_state, train_args


def data_copy(data_bin, out, change=None):
    """A copy of data_bin whose dict.*.txt are changed by ``change(lines)``."""
    shutil.copytree(data_bin, out)
    for lang in ("de", "en"):
        path = out / f"dict.{lang}.txt"
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(change(lines) if change else lines), encoding="utf-8")
    return out


def swapped(lines):
    return [lines[1], lines[0], *lines[2:]]


def grown(lines):
    return [*lines, "zzz-new-word 1\n"]


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """A 2-update run's save dir."""
    save = tmp_path_factory.mktemp("trained")
    run = fairseq_train(*train_args(data_bin, save, 2, "--disable-validation"))
    assert run.error is None, run.output[-3000:]
    return save


def test_fingerprint_tells_reordered_and_resized_dictionaries_apart():
    d = Dictionary()
    for word in ("a", "b", "c"):
        d.add_symbol(word)
    reordered, resized = Dictionary(), Dictionary()
    for word in ("b", "a", "c"):
        reordered.add_symbol(word)
    for word in ("a", "b", "c", "d"):
        resized.add_symbol(word)
    same = Dictionary()
    for word in ("a", "b", "c"):
        same.add_symbol(word)
    fp = dictionary_check.fingerprint
    assert fp(d) == fp(same)
    assert fp(d)["size"] == fp(reordered)["size"] and fp(d) != fp(reordered)
    assert fp(resized)["size"] == fp(d)["size"] + 1


def test_new_checkpoints_record_their_dictionaries(trained, data_bin):
    recorded = dictionary_check.recorded(last_state(trained))
    expected = dictionary_check.fingerprint(Dictionary.load(str(data_bin / "dict.de.txt")))
    assert recorded == {"source": expected, "target": expected}


@pytest.mark.parametrize(
    "change, how",
    [
        (swapped, "the same symbols in another order"),
        (grown, r"\d+ symbols in the checkpoint, \d+ here"),
    ],
    ids=["reordered", "resized"],
)
def test_resume_refuses_other_dictionaries(trained, data_bin, tmp_path, change, how):
    save = tmp_path / "save"
    shutil.copytree(trained, save)
    data = data_copy(data_bin, tmp_path / "data", change)
    before = (save / "checkpoint_last.pt").read_bytes()
    run = fairseq_train(*train_args(data, save, 4))
    assert isinstance(run.error, UsageError), run.output[-3000:]
    assert re.fullmatch(
        rf"checkpoint \S*{re.escape(str(save))}/checkpoint_last\.pt was trained with another "
        rf"source dictionary than {re.escape(str(data))}/dict\.de\.txt \({how}\): use the data "
        r"directory it was trained on .*; to train a new model on this data, use a new --save-dir",
        str(run.error),
    ), str(run.error)
    assert (save / "checkpoint_last.pt").read_bytes() == before


@pytest.mark.parametrize("command, change", [("generate", swapped), ("validate", grown)])
def test_generate_and_validate_refuse_other_dictionaries(
    trained, data_bin, tmp_path, command, change
):
    data = data_copy(data_bin, tmp_path / "data", change)
    path = trained / "checkpoint_last.pt"
    run = fairseq_command(
        command,
        data,
        "--user-dir",
        USER_DIR,
        "--path",
        path,
        "--cpu",
        "--max-tokens",
        "2000",
        "-s",
        "de",
        "-t",
        "en",
        *(["--task", "translation"] if command == "validate" else []),
    )
    assert isinstance(run.error, UsageError), run.output[-3000:]
    assert re.fullmatch(
        rf"checkpoint {re.escape(str(path))} was trained with another "
        rf"source dictionary than {re.escape(str(data))}/dict\.de\.txt .*\)",
        str(run.error),
    ), str(run.error)


def test_a_checkpoint_without_the_record_loads_as_before(trained, data_bin, tmp_path):
    state = torch.load(trained / "checkpoint_last.pt", weights_only=False)
    del state["extra_state"][dictionary_check.KEY]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    data = data_copy(data_bin, tmp_path / "data", swapped)  # not refused: nothing to compare
    run = fairseq_command(
        "generate",
        data,
        "--user-dir",
        USER_DIR,
        "--path",
        old,
        "--cpu",
        "--max-tokens",
        "2000",
        "-s",
        "de",
        "-t",
        "en",
    )
    assert run.error is None, run.output[-3000:]
    assert "Generate test with beam=5" in run.output
