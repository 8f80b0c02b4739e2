"""Mistakes on fairseq's training and generation command lines: each ends with one ``error:``
line and exit status 1 (2 for what argparse refuses) before any work, and leaves every existing
checkpoint as it was. A loss that turns NaN/inf during training stops in one line that names the
likely causes. The synthetic corpus (``data_bin``) and copies of one short run's save dir.

Each mistake runs fairseq-train (or fairseq-generate) in this process, where it ends with the
:class:`~rdrop_fairseq.errors.UsageError` whose message the command line prints as its ``error:``
line (or with argparse's ``SystemExit(2)``). The command lines themselves run once for each way
they end: the plugin's hook in fairseq-train and in fairseq-generate, and argparse."""

import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.data import indexed_dataset

from rdrop_fairseq.errors import UsageError
from support import BIN, USER_DIR, run_cli
from support.training import fairseq_command, fairseq_train, output, train_args


def last_line(text):
    return text.strip().splitlines()[-1]


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def existing_run(data_bin, tmp_path_factory):
    """The save dir of a 2-update run: what a mistaken command must leave alone."""
    save = tmp_path_factory.mktemp("existing-run")
    # fairseq keeps the best validation loss of the process on save_checkpoint: without the
    # one of an earlier run in this process, this run writes checkpoint_best.pt, as a new one
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(checkpoint_utils.save_checkpoint, "best", raising=False)
        run = fairseq_train(*train_args(data_bin, save, 2))
    assert run.error is None, run.output[-3000:]
    assert (save / "checkpoint_best.pt").is_file()  # named by the damaged-checkpoint messages
    return save


def binarized_copy(data_bin, out, train=("train", "train"), empty=False):
    """``out`` with data_bin's dictionaries and valid split; its train split's de and en sides
    are data_bin's ``train[0]`` and ``train[1]`` splits (symlinks), or empty files."""
    out.mkdir()
    for name in (
        "dict.de.txt",
        "dict.en.txt",
        *[f"valid.de-en.{lang}.{ext}" for lang in ("de", "en") for ext in ("bin", "idx")],
    ):
        (out / name).symlink_to(data_bin / name)
    for lang, split in zip(("de", "en"), train):
        prefix = str(out / f"train.de-en.{lang}")
        if empty:
            indexed_dataset.MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16).finalize(
                prefix + ".idx"
            )
            continue
        for ext in ("bin", "idx"):
            (out / f"train.de-en.{lang}.{ext}").symlink_to(data_bin / f"{split}.de-en.{lang}.{ext}")
    return out


def corrupt_copy(src, dst, size):
    """``dst``: a copy of the save dir ``src`` whose checkpoint_last.pt is cut to ``size`` bytes."""
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    with open(dst / "checkpoint_last.pt", "r+b") as f:
        f.truncate(size)
    return dst


def mismatched_data_dir(data_bin, out):
    """A directory that has the de and en dictionaries but holds de-fr data."""
    out.mkdir()
    for lang in ("de", "en", "fr"):
        (out / f"dict.{lang}.txt").symlink_to(data_bin / "dict.en.txt")
    for split in ("train", "valid"):
        for old, new in (("de", "de"), ("en", "fr")):
            for ext in ("bin", "idx"):
                (out / f"{split}.de-fr.{new}.{ext}").symlink_to(
                    data_bin / f"{split}.de-en.{old}.{ext}"
                )
    return out


def replace(args, old, *new):
    i = args.index(old)
    return args[:i] + list(new) + args[i + 1 :]


def foreign_criterion(args):
    """--criterion label_smoothed_cross_entropy (without --rdrop-alpha, which it does not know)."""
    args = replace(args, "--rdrop-alpha")
    return replace(
        replace(args, "5"), "label_smoothed_cross_entropy_rdrop", "label_smoothed_cross_entropy"
    )


def generate_args(data, path):
    """fairseq-generate's arguments: the model ``path`` on the valid split of ``data``."""
    return [
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "-s",
        "de",
        "-t",
        "en",
        "--path",
        path,
        "--gen-subset",
        "valid",
        "--cpu",
        "--beam",
        "1",
        "--batch-size",
        "8",
    ]


ARGPARSE = "alpha not a number"  # refused by argparse: exit status 2, its own line


def bad_input_cases(data_bin, base_dir, root):
    """name -> a function that sets the case up under ``root`` and returns (command: "train" or
    "generate", its arguments, the folder it must leave as it was, a regex its message must match
    from its start: the UsageError's, which the command line prints after ``error: ``, or for
    :data:`ARGPARSE`, the last line printed)."""

    def train(*extra, save=None, alpha="5", data=data_bin, edit=lambda args: args):
        """fairseq-train on ``data`` into ``save``, by default a copy of the existing run."""
        if save is None:
            save = root / "save"
            shutil.copytree(base_dir, save)  # an existing run: must not be touched
        return "train", edit(train_args(data, save, 32, *extra, alpha=alpha)), save

    def at(path):
        return re.escape(str(path))

    missing, corrupt, empty = root / "no-such-checkpoint.pt", root / "corrupt", root / "empty"
    other, nowhere = root / "de-fr-data", root / "no-such-data"
    empty_train, uneven = root / "empty-train", root / "uneven-train"
    return {
        "alpha negative": lambda: (*train(alpha="-1"), r"--rdrop-alpha must be .*, got -1\.0$"),
        ARGPARSE: lambda: (
            *train(alpha="abc"),
            r"fairseq-train: error: argument --rdrop-alpha: invalid float value: 'abc'$",
        ),
        "alpha nan": lambda: (*train(alpha="nan"), r"--rdrop-alpha must be .*, got nan$"),
        "alpha inf": lambda: (*train(alpha="inf"), r"--rdrop-alpha must be .*, got inf$"),
        "foreign criterion": lambda: (
            *train(edit=foreign_criterion),
            r"--task rdrop_translation needs --criterion label_smoothed_cross_entropy_rdrop "
            r"\(got label_smoothed_cross_entropy\)",
        ),
        "missing --restore-file": lambda: (
            *train("--restore-file", missing),
            rf"--restore-file {at(missing)}: .* does not exist",
        ),
        "truncated checkpoint_last.pt": lambda: (
            *train(save=corrupt_copy(base_dir, corrupt, 1000)),
            rf"checkpoint {at(corrupt)}/checkpoint_last\.pt is truncated ",
        ),
        "empty checkpoint_last.pt": lambda: (
            *train(save=corrupt_copy(base_dir, empty, 0)),
            rf"checkpoint {at(empty)}/checkpoint_last\.pt is empty; resume from an older "
            rf"checkpoint with --restore-file {at(empty)}/checkpoint_best\.pt \(given once: ",
        ),
        "-s not in the data": lambda: (
            *train(edit=lambda args: replace(args, "de", "fr")),
            r"-s/--source-lang fr: .* has no dict\.fr\.txt \(its dictionaries: de, en\)$",
        ),
        "data dir of another language pair": lambda: (
            *train(data=mismatched_data_dir(data_bin, other)),
            rf"no 'valid' data for de-en .*language pairs found: {at(other)}: de-fr$",
        ),
        "missing data dir": lambda: (
            *train(data=nowhere),
            rf"data directory {at(nowhere)} does not exist$",
        ),
        "--fp16 with --cpu": lambda: (
            *train("--fp16"),
            r"--fp16 trains on CUDA only, with --cpu; leave it out",
        ),
        "--fp16 without CUDA": lambda: (
            *train("--fp16", edit=lambda args: replace(args, "--cpu")),
            r"--fp16 trains on CUDA only, on this machine: torch sees no CUDA",
        ),
        "--max-tokens below every sentence": lambda: (
            *train("--max-tokens", "5"),
            r"no sentence of 'train' fits in --max-tokens 5: the shortest has \d+ tokens; raise "
            r"it to at least \d+$",
        ),
        "--max-tokens-valid below a sentence": lambda: (
            *train("--max-tokens-valid", "8"),
            r"sentence \d+ of 'valid' has \d+ tokens, more than --max-tokens-valid \(default: "
            r"--max-tokens\) 8: raise it to at least \d+",
        ),
        "empty train split": lambda: (
            *train(data=binarized_copy(data_bin, empty_train, empty=True)),
            rf"the 'train' split in {at(empty_train)} holds no sentences",
        ),
        "train sides of different lengths": lambda: (
            *train(data=binarized_copy(data_bin, uneven, train=("train", "valid"))),
            rf"{at(uneven)}/train\.de-en\.{{de,en}}: the de side holds 1000 sentences and the "
            r"en side 20; the two sides of a parallel corpus",
        ),
        "loss turns non-finite": lambda: (
            *train("--lr", "1e30"),
            r"training stopped at update \d+: the loss or its gradient is not finite \(fairseq: "
            r"gradients are Nan/Inf\); likely causes: --rdrop-alpha 5 too large, --lr 1e\+30 "
            r"too high; the checkpoints in .* are as they were",
        ),
        "generate --path missing": lambda: (
            "generate",
            generate_args(data_bin, missing),
            base_dir,
            rf"--path: Model file not found: {at(missing)}$",
        ),
        "generate --path corrupt": lambda: (
            "generate",
            generate_args(data_bin, corrupt_copy(base_dir, corrupt, 1000) / "checkpoint_last.pt"),
            corrupt,
            rf"checkpoint {at(corrupt)}/checkpoint_last\.pt is truncated ",
        ),
    }


BAD_INPUTS = [
    "alpha negative",
    ARGPARSE,
    "alpha nan",
    "alpha inf",
    "foreign criterion",
    "missing --restore-file",
    "truncated checkpoint_last.pt",
    "empty checkpoint_last.pt",
    "-s not in the data",
    "data dir of another language pair",
    "missing data dir",
    "--fp16 with --cpu",
    "--fp16 without CUDA",
    "--max-tokens below every sentence",
    "--max-tokens-valid below a sentence",
    "empty train split",
    "train sides of different lengths",
    "loss turns non-finite",
    "generate --path missing",
    "generate --path corrupt",
]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name == "--fp16 without CUDA" and torch.cuda.is_available(), reason="CUDA is there"
            ),
        )
        for name in BAD_INPUTS
    ],
)
def test_bad_input_fails_with_one_clear_error_and_touches_nothing(
    data_bin, existing_run, tmp_path, name
):
    command, args, save, pattern = bad_input_cases(data_bin, existing_run, tmp_path)[name]()
    before = digests(save)
    run = fairseq_command("generate", *args) if command == "generate" else fairseq_train(*args)
    if name == ARGPARSE:
        assert isinstance(run.error, SystemExit) and run.error.code == 2, run.output[-3000:]
        assert re.match(pattern, last_line(run.output)), last_line(run.output)
    else:
        assert isinstance(run.error, UsageError), run.output[-3000:]
        assert re.match(pattern, str(run.error)), str(run.error)
    after = digests(save)
    if name == "loss turns non-finite":  # fairseq's dump of the failing state, beside them
        assert after.pop("crash.pt") and "crash.pt" not in before
    assert after == before  # the existing checkpoints (and the corrupt one) are untouched


# -- the command lines: what they print and their exit status, once for each way they end ----


@pytest.mark.parametrize(
    "name, status",
    [
        ("truncated checkpoint_last.pt", 1),  # the plugin's hook in fairseq-train
        (ARGPARSE, 2),  # argparse
        ("generate --path corrupt", 1),  # the plugin's hook in fairseq-generate
    ],
)
def test_on_the_command_line_a_bad_input_is_one_line_and_an_exit_status(
    data_bin, existing_run, tmp_path, name, status
):
    command, args, save, pattern = bad_input_cases(data_bin, existing_run, tmp_path)[name]()
    before = digests(save)
    proc = run_cli(BIN / f"fairseq-{command}", *args, check=False, timeout=300)
    assert proc.returncode == status, output(proc)[-3000:]
    line = last_line(proc.stderr)
    assert re.match(pattern if name == ARGPARSE else f"error: {pattern}", line), line
    assert "Traceback" not in proc.stderr
    assert digests(save) == before  # the lock the run took is gone with it, nothing else changed


# -- the checks themselves, without a training run ----------------------------------------------


def binarized(folder, split, lang, sentences):
    """``folder/split.de-en.lang.{bin,idx}`` holding ``sentences`` one-token sentences."""
    prefix = str(folder / f"{split}.de-en.{lang}")
    builder = indexed_dataset.MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(sentences):
        builder.add_item(torch.tensor([4, 2], dtype=torch.int64))
    builder.finalize(prefix + ".idx")


@pytest.mark.parametrize(
    "de, en, message",
    [
        (3, 2, r"the de side holds 3 sentences and the en side 2"),
        (0, 0, r"the 'train' split in .* holds no sentences"),
        (3, 3, None),
    ],
)
def test_split_checks(tmp_path, de, en, message):
    from rdrop_fairseq.data_checks import check_split
    from rdrop_fairseq.errors import UsageError

    binarized(tmp_path, "train", "de", de)
    binarized(tmp_path, "train", "en", en)
    if message is None:
        check_split(str(tmp_path), "train", "de", "en")
        return
    with pytest.raises(UsageError, match=message):
        check_split(str(tmp_path), "train", "de", "en")
