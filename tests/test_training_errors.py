"""Mistakes on fairseq's training and generation command lines: each ends with one ``error:``
line and exit status 1 (2 for what argparse refuses) before any work, and leaves every existing
checkpoint as it was. A loss that turns NaN/inf during training stops in one line that names the
likely causes. The synthetic corpus (``data_bin``) and copies of one short run's save dir."""

import hashlib
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fairseq.data import indexed_dataset

from support import BIN, USER_DIR, run_cli
from support.training import output, train_args


def last_line(text):
    return text.strip().splitlines()[-1]


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def existing_run(data_bin, tmp_path_factory):
    """The save dir of a 2-update run: what a mistaken command must leave alone."""
    save = tmp_path_factory.mktemp("existing-run")
    run_cli(BIN / "fairseq-train", *train_args(data_bin, save, 2))
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
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    with open(dst / "checkpoint_last.pt", "r+b") as f:
        f.truncate(size)


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


def generate(data, path):
    return [
        BIN / "fairseq-generate",
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


def bad_input_cases(data_bin, base_dir, root):  # noqa: C901 (one case per line)
    """name -> (command, save dir to keep unchanged, expected exit status, last stderr line)."""
    cases = {}

    def train(
        name,
        *extra,
        save=None,
        alpha="5",
        data=data_bin,
        status=1,
        last=None,
        edit=lambda args: args,
    ):
        save = save or root / name.replace(" ", "-").replace("/", "")
        if not save.exists():
            shutil.copytree(base_dir, save)  # an existing run: must not be touched
        args = edit(train_args(data, save, 32, *extra, alpha=alpha))
        cases[name] = ([BIN / "fairseq-train", *args], save, status, last)

    train("alpha negative", alpha="-1", last=r"^error: --rdrop-alpha must be .*, got -1\.0$")
    train(
        "alpha not a number",
        alpha="abc",
        status=2,
        last=r"^fairseq-train: error: argument --rdrop-alpha: invalid float value: 'abc'$",
    )
    train("alpha nan", alpha="nan", last=r"^error: --rdrop-alpha must be .*, got nan$")
    train("alpha inf", alpha="inf", last=r"^error: --rdrop-alpha must be .*, got inf$")
    train(
        "foreign criterion",
        edit=foreign_criterion,
        last=r"^error: --task rdrop_translation needs --criterion "
        r"label_smoothed_cross_entropy_rdrop \(got label_smoothed_cross_entropy\)",
    )
    missing = root / "no-such-checkpoint.pt"
    train(
        "missing --restore-file",
        "--restore-file",
        missing,
        last=rf"^error: --restore-file {re.escape(str(missing))}: .* does not exist",
    )
    corrupt = root / "corrupt"
    corrupt_copy(base_dir, corrupt, 1000)
    train(
        "truncated checkpoint_last.pt",
        save=corrupt,
        last=rf"^error: checkpoint {re.escape(str(corrupt))}/checkpoint_last\.pt is truncated ",
    )
    empty = root / "empty"
    corrupt_copy(base_dir, empty, 0)
    train(
        "empty checkpoint_last.pt",
        save=empty,
        last=rf"^error: checkpoint {re.escape(str(empty))}/checkpoint_last\.pt is empty; "
        rf"resume from an older checkpoint with --restore-file "
        rf"{re.escape(str(empty))}/checkpoint_best\.pt \(given once: ",
    )
    train(
        "-s not in the data",
        edit=lambda args: replace(args, "de", "fr"),
        last=r"^error: -s/--source-lang fr: .* has no dict\.fr\.txt \(its dictionaries: de, en\)$",
    )
    other = mismatched_data_dir(data_bin, root / "de-fr-data")
    train(
        "data dir of another language pair",
        data=other,
        last=rf"^error: no 'valid' data for de-en .*language pairs found: "
        rf"{re.escape(str(other))}: de-fr$",
    )
    nowhere = root / "no-such-data"
    train(
        "missing data dir",
        data=nowhere,
        last=rf"^error: data directory {re.escape(str(nowhere))} does not exist$",
    )
    train(
        "--fp16 with --cpu",
        "--fp16",
        last=r"^error: --fp16 trains on CUDA only, with --cpu; leave it out",
    )
    if not torch.cuda.is_available():
        train(
            "--fp16 without CUDA",
            "--fp16",
            edit=lambda args: replace(args, "--cpu"),
            last=r"^error: --fp16 trains on CUDA only, on this machine: torch sees no CUDA",
        )
    train(
        "--max-tokens below every sentence",
        "--max-tokens",
        "5",
        last=r"^error: no sentence of 'train' fits in --max-tokens 5: the shortest has \d+ "
        r"tokens; raise it to at least \d+$",
    )
    train(
        "--max-tokens-valid below a sentence",
        "--max-tokens-valid",
        "8",
        last=r"^error: sentence \d+ of 'valid' has \d+ tokens, more than --max-tokens-valid "
        r"\(default: --max-tokens\) 8: raise it to at least \d+",
    )
    empty = binarized_copy(data_bin, root / "empty-train", empty=True)
    train(
        "empty train split",
        data=empty,
        last=rf"^error: the 'train' split in {re.escape(str(empty))} holds no sentences",
    )
    uneven = binarized_copy(data_bin, root / "uneven-train", train=("train", "valid"))
    train(
        "train sides of different lengths",
        data=uneven,
        last=rf"^error: {re.escape(str(uneven))}/train\.de-en\.{{de,en}}: the de side holds "
        r"1000 sentences and the en side 20; the two sides of a parallel corpus",
    )
    train(
        "loss turns non-finite",
        "--lr",
        "1e30",
        status=1,
        last=r"^error: training stopped at update \d+: the loss or its gradient is not finite "
        r"\(fairseq: gradients are Nan/Inf\); likely causes: --rdrop-alpha 5 too large, "
        r"--lr 1e\+30 too high; the checkpoints in .* are as they were",
    )
    cases["generate --path missing"] = (
        generate(data_bin, missing),
        base_dir,
        1,
        rf"^error: --path: Model file not found: {re.escape(str(missing))}$",
    )
    cases["generate --path corrupt"] = (
        generate(data_bin, corrupt / "checkpoint_last.pt"),
        base_dir,
        1,
        rf"^error: checkpoint {re.escape(str(corrupt))}/checkpoint_last\.pt is truncated ",
    )
    return cases


@pytest.fixture(scope="module")
def bad_inputs(data_bin, existing_run, tmp_path_factory):
    """Every bad-input command, run two at a time: name -> (case, CompletedProcess, before,
    after)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cases = bad_input_cases(data_bin, existing_run, root)
    before = {name: digests(case[1]) for name, case in cases.items()}

    def run(name):
        return name, run_cli(*cases[name][0], check=False, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(run, cases))
    return {
        name: (cases[name], done[name], before[name], digests(cases[name][1])) for name in cases
    }


BAD_INPUTS = [
    "alpha negative",
    "alpha not a number",
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
def test_bad_input_fails_with_one_clear_line_and_touches_nothing(bad_inputs, name):
    (command, save, status, pattern), proc, before, after = bad_inputs[name]
    assert proc.returncode == status, output(proc)[-3000:]
    assert re.search(pattern, last_line(proc.stderr)), last_line(proc.stderr)
    assert "Traceback" not in proc.stderr
    if name == "loss turns non-finite":  # fairseq's dump of the failing state, beside them
        assert after.pop("crash.pt") and "crash.pt" not in before
    assert after == before  # the existing checkpoints (and the corrupt one) are untouched


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
