"""One line, not a traceback: resuming a checkpoint_last.pt of another model, a damaged
checkpoint_last.pt (naming the checkpoints to resume from instead), a symbol listed twice in a
dictionary, validation sentences longer than the model takes. fairseq-train runs in this process:
the one line is the message of the UsageError it ends with, which the command line prints as
``error: ...`` with exit status 1 (the command line itself: tests/test_training_errors.py)."""

import re
import shutil

import pytest
from fairseq import checkpoint_utils

import rdrop_fairseq  # noqa: F401
from rdrop_fairseq.errors import UsageError
from support.training import fairseq_train, train_args


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """A 10-update run with interval checkpoints (checkpoint_1_5.pt, checkpoint_1_10.pt)."""
    save = tmp_path_factory.mktemp("trained")
    # fairseq keeps the best validation loss of the process on save_checkpoint: without the
    # one of an earlier run in this process, this run writes checkpoint_best.pt, as a new one
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(checkpoint_utils.save_checkpoint, "best", raising=False)
        run = fairseq_train(*train_args(data_bin, save, 10, "--save-interval-updates", "5"))
    assert run.error is None, run.output[-3000:]
    assert (save / "checkpoint_best.pt").is_file()  # named by the damaged-checkpoint message
    return save


def fails(*args):
    """The message of the UsageError fairseq-train ends with on ``args``."""
    run = fairseq_train(*args)
    assert isinstance(run.error, UsageError), run.output[-3000:]
    return str(run.error)


def test_resuming_another_architecture_says_how_to_start_fresh(trained, data_bin, tmp_path):
    save = tmp_path / "save"
    shutil.copytree(trained, save)
    line = fails(*train_args(data_bin, save, 12, "--encoder-ffn-embed-dim", "64"))
    assert re.fullmatch(
        rf"cannot resume from {re.escape(str(save))}/checkpoint_last\.pt: its model is "
        r"not the one this command line builds \(another --arch, model size or dictionary size; "
        r"size mismatch for encoder\.layers\.0\.fc1\.weight: .*\); to start a new run, use a "
        r"new --save-dir .*",
        line,
    ), line


def test_a_damaged_checkpoint_last_names_the_checkpoints_to_resume_from(
    trained, data_bin, tmp_path
):
    save = tmp_path / "save"
    shutil.copytree(trained, save)
    last = save / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    line = fails(*train_args(data_bin, save, 12))
    assert re.fullmatch(
        rf"checkpoint {re.escape(str(last))} is truncated or corrupt \(a damaged zip "
        rf"archive\); resume from an older checkpoint with --restore-file "
        rf"{re.escape(str(save))}/checkpoint_best\.pt or --restore-file "
        rf"{re.escape(str(save))}/checkpoint_1_10\.pt \(given once: .*\)",
        line,
    ), line


def test_a_symbol_listed_twice_in_a_dictionary_is_one_line(data_bin, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_bin, data)
    path = data / "dict.de.txt"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines + [lines[4]]), encoding="utf-8")
    word = lines[4].split()[0]
    line = fails(*train_args(data, tmp_path / "save", 2))
    assert line == (
        f"dictionary {path}: the symbol {word!r} is on lines 5 and "
        f"{len(lines) + 1}; every symbol must appear once: remove the second line "
        "(and binarize the data again with fairseq-preprocess if it used this "
        "dictionary), or mark it with #fairseq:overwrite"
    )


def test_validation_sentences_longer_than_the_model_takes_say_what_helps(data_bin, tmp_path):
    short = ("--max-source-positions", "8", "--max-target-positions", "8")
    line = fails(*train_args(data_bin, tmp_path / "a", 2, *short))
    assert re.fullmatch(
        r"\d+ sentences of 'valid' are longer than the model takes \(sentence \d+: "
        r"\(\d+, \d+\) tokens, limits \(8, 8\): --max-source-positions, --max-target-positions\): "
        r"--skip-invalid-size-inputs-valid-test leaves them out .*",
        line,
    ), line
    # what the line says helps does help
    run = fairseq_train(
        *train_args(data_bin, tmp_path / "b", 2, *short, "--skip-invalid-size-inputs-valid-test")
    )
    assert run.error is None and "done training" in run.output, run.output[-3000:]
