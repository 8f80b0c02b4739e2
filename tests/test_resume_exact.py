"""Resuming at any point ends with the parameters of the run that never stopped: stopped inside
epoch 1, at the end of epoch 1, inside epoch 3, with --update-freq 2, and with 2 processes.

fairseq-train on the synthetic corpus (13 batches an epoch), dropout 0, stopped with --max-update
N and started again with the final --max-update (the same command otherwise). fairseq builds
the training batches once per process, breaking ties between sentences of equal length with
--seed + the epoch it builds them in; a process resumed in epoch e > 1 built other batches than
the run that never stopped (built in epoch 1) and ended with other parameters. The plugin
(rdrop_fairseq/resume.py) builds them as in epoch 1.

The single-process runs are fairseq-train's ``cli_main`` in this process, one CPU thread each,
every run (stopped, resumed, uninterrupted) made the same way: each builds its own task, hence
its own batches, as a new process does (test_resume.py resumes a fairseq-train process killed
with SIGKILL). The 2-process case runs 2 gloo ranks through the test launcher, twice: the run that
never stopped, which also saves a checkpoint at the update where the other stops (the same
save as at a --max-update stop), and a run resumed from that checkpoint as its
checkpoint_last.pt; rank 0 loads it and broadcasts the state, config included, to rank 1, which
unpickles it through the plugin's loader.
"""

import re
import shutil

import pytest
import torch
from fairseq import checkpoint_utils, trainer

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, installs the fixes)
from rdrop_fairseq import resume
from support import LAUNCHER, run_cli
from support.tiny_model import build
from support.training import (
    as_in_a_new_process,
    curve,
    fairseq_train,
    last_state,
    output,
    train_args,
)

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NO_DROPOUT = ("--dropout", "0")
RESUMED_LINE = "the training batches are those a run that never stopped built in epoch 1"


def train(data, save, updates, *extra):
    """fairseq-train in this process; what it logged."""
    with as_in_a_new_process():
        run = fairseq_train(*train_args(data, save, updates, *NO_DROPOUT, *extra))
    assert run.error is None, run.output[-3000:]
    return run.output


def launch(data, save, updates, *extra):
    """2 fairseq-train processes (gloo) through the test launcher; what they printed."""
    args = train_args(data, save, updates, *NO_DROPOUT, *extra)
    proc = run_cli(*LAUNCHER, "--nproc", "2", "--", *args, env=ONE_THREAD, timeout=600, check=False)
    log = output(proc)
    # gloo's process group can abort a rank as the process exits, after training and saving
    # ("terminate called without an active exception", status 134): what is saved is then
    # whole (checked by the comparisons), and the run is not what this test is about
    torn_down = proc.returncode == 134 and "done training in" in log and "terminate called" in log
    assert proc.returncode == 0 or torn_down, log[-3000:]
    return log


def tensors_equal(a, b):
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(tensors_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def assert_identical(expected_dir, got_dir, updates):
    """Parameters, optimizer state and scheduler state bit for bit."""
    expected, got = last_state(expected_dir), last_state(got_dir)
    assert got["optimizer_history"][-1]["num_updates"] == updates
    assert expected["model"].keys() == got["model"].keys()
    different = [
        name
        for name, tensor in expected["model"].items()
        if not torch.equal(tensor, got["model"][name])
    ]
    assert not different, f"{len(different)} parameters differ, e.g. {different[0]}"
    assert tensors_equal(expected["last_optimizer_state"], got["last_optimizer_state"])
    assert (
        expected["optimizer_history"][-1]["lr_scheduler_state"]
        == got["optimizer_history"][-1]["lr_scheduler_state"]
    )


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


def test_two_processes_resumed_inside_epoch_2_continue_as_if_never_stopped(data_bin, tmp_path):
    """2 gloo processes: 7 updates an epoch (13 batches over 2 ranks; rank 1 gets fairseq's dummy
    batch at the last update of each), resumed at update 9 (the second of epoch 2) and run to 15
    (the first of epoch 3): the same logged losses and the same final state as the run that never
    stopped."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    at_9 = ("--disable-validation", "--save-interval-updates", "9")
    base = curve(launch(data_bin, whole, 15, *at_9))
    saved = checkpoint_utils.load_checkpoint_to_cpu(str(whole / "checkpoint_2_9.pt"))
    itr = saved["extra_state"]["train_iterator"]
    assert saved["optimizer_history"][-1]["num_updates"] == 9
    assert itr["epoch"] == 2 and itr["iterations_in_epoch"] == 2
    stopped.mkdir()
    shutil.copyfile(whole / "checkpoint_2_9.pt", stopped / "checkpoint_last.pt")
    log = launch(data_bin, stopped, 15, *at_9)
    assert re.search(
        r"\[rank 0\] .*Loaded checkpoint \S*checkpoint_last\.pt \(epoch 2 @ 9 updates\)", log
    ), log[-3000:]
    assert "Unsupported global" not in log
    after = curve(log)
    assert sorted(base) == list(range(1, 16))
    assert base[7][0] == 1 and base[8][0] == 2 and base[14][0] == 2 and base[15][0] == 3
    assert sorted(after) == list(range(10, 16))  # on into epoch 3
    assert {u: base[u] for u in after} == after  # the same losses, as logged
    assert_identical(whole, stopped, 15)


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
