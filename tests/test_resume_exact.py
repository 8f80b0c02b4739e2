"""Resuming at any point ends with the parameters of the run that never stopped: stopped inside
epoch 1, at the end of epoch 1, inside epoch 3, with --update-freq 2, and with 2 processes.

fairseq-train on the synthetic corpus (13 batches an epoch), dropout 0, stopped with --max-update
N and started again with the final --max-update (the same command otherwise). fairseq builds
the training batches once per process, breaking ties between sentences of equal length with
--seed + the epoch it builds them in; a process resumed in epoch e > 1 built other batches than
the run that never stopped (built in epoch 1) and ended with other parameters. The plugin
(rdrop_fairseq/resume.py) builds them as in epoch 1.
"""

import re

import pytest
import torch
from fairseq import trainer

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, installs the fixes)
from rdrop_fairseq import resume
from support import BIN, LAUNCHER, run_cli
from support.tiny_model import build
from support.training import last_state, output, train_args

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NO_DROPOUT = ("--dropout", "0")
RESUMED_LINE = "the training batches are those a run that never stopped built in epoch 1"


def train(data, save, updates, *extra, processes=1):
    args = train_args(data, save, updates, *NO_DROPOUT, *extra)
    if processes == 1:
        return output(run_cli(BIN / "fairseq-train", *args, env=ONE_THREAD))
    return output(
        run_cli(
            *LAUNCHER,
            "--nproc",
            str(processes),
            "--",
            *args,
            env=ONE_THREAD,
            timeout=600,
        )
    )


def assert_identical(expected_dir, got_dir, updates):
    expected, got = last_state(expected_dir), last_state(got_dir)
    assert got["optimizer_history"][-1]["num_updates"] == updates
    assert expected["model"].keys() == got["model"].keys()
    different = [
        name
        for name, tensor in expected["model"].items()
        if not torch.equal(tensor, got["model"][name])
    ]
    assert not different, f"{len(different)} parameters differ, e.g. {different[0]}"
    for a, b in zip(
        expected["last_optimizer_state"]["state"].values(),
        got["last_optimizer_state"]["state"].values(),
    ):
        assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


@pytest.fixture(scope="module")
def uninterrupted(data_bin, tmp_path_factory):
    """{--update-freq: save dir} of runs that never stopped, made when first asked for."""
    runs = {}

    def get(update_freq, updates):
        if (update_freq, updates) not in runs:
            save = tmp_path_factory.mktemp(f"uninterrupted-uf{update_freq}")
            train(data_bin, save, updates, "--update-freq", str(update_freq))
            runs[update_freq, updates] = save
        return runs[update_freq, updates]

    return get


@pytest.mark.parametrize(
    "stop, end, update_freq, resumed_epoch",
    [
        (5, 30, 1, 1),  # inside epoch 1
        (13, 30, 1, 2),  # at the end of epoch 1 (13 batches an epoch)
        (29, 30, 1, 3),  # inside epoch 3
        (9, 12, 2, 2),  # --update-freq 2: 7 updates an epoch, stopped inside epoch 2
    ],
    ids=["inside-epoch-1", "end-of-epoch-1", "inside-epoch-3", "update-freq-2"],
)
def test_resumed_run_ends_bit_identical_to_the_uninterrupted_one(
    uninterrupted, data_bin, tmp_path, stop, end, update_freq, resumed_epoch
):
    expected = uninterrupted(update_freq, end)
    train(data_bin, tmp_path, stop, "--update-freq", str(update_freq))
    log = train(data_bin, tmp_path, end, "--update-freq", str(update_freq))
    assert re.search(
        rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch {resumed_epoch} @ "
        rf"{stop} updates\)",
        log,
    ), log[-3000:]
    assert_identical(expected, tmp_path, end)
    assert (RESUMED_LINE in log) == (resumed_epoch > 1)


def test_two_processes_resumed_inside_epoch_2_end_bit_identical(data_bin, tmp_path):
    """2 gloo processes: 7 updates an epoch (13 batches over 2 ranks), stopped at update 9."""
    train(data_bin, tmp_path / "whole", 12, "--disable-validation", processes=2)
    train(data_bin, tmp_path / "stopped", 9, "--disable-validation", processes=2)
    log = train(data_bin, tmp_path / "stopped", 12, "--disable-validation", processes=2)
    assert re.search(
        r"\[rank 0\] .*Loaded checkpoint \S*checkpoint_last\.pt "
        r"\(epoch 2 @ 9 updates\)",
        log,
    ), log[-3000:]
    assert_identical(tmp_path / "whole", tmp_path / "stopped", 12)


def _batches(folder, get_train_iterator, epoch):
    cfg, task, model, criterion = build(folder, extra=["--max-tokens", "2000", "--seed", "3"])
    return [
        b.tolist()
        for b in get_train_iterator(
            trainer.Trainer(cfg, task, model, criterion), epoch=epoch
        ).frozen_batches
    ]


def test_the_iterator_made_in_a_later_epoch_has_the_batches_of_epoch_1(data_bin):
    """The cause, shown with fairseq's own ``get_train_iterator``: the batches it builds in epoch 2
    are not those it builds in epoch 1; the plugin's builds those of epoch 1 in every epoch."""
    stock = trainer.Trainer.get_train_iterator.__wrapped__
    assert _batches(data_bin, stock, 2) != _batches(data_bin, stock, 1)
    fixed = resume.keep_first_epoch_batches(stock)
    assert (
        _batches(data_bin, fixed, 3) == _batches(data_bin, fixed, 2) == _batches(data_bin, stock, 1)
    )
