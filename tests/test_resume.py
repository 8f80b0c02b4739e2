"""Resuming long runs: a run killed with SIGKILL mid-epoch continues exactly as the uninterrupted
run; checkpoint_last.pt survives a crash while it is replaced; the same seed gives the same run
twice. fairseq's real command line on the synthetic corpus (the ``data_bin`` fixture: 1 000
pairs, 13 batches of --max-tokens 2000 an epoch) with a 1-layer, 16-dim Transformer on the CPU,
one thread per process: the uninterrupted run and the run killed are fairseq-train processes;
the resumed run and the second run of the same seed are fairseq-train's ``cli_main`` in this
process, on one thread too (test_resume_exact.py resumes at other points, and with 2
processes).

Why resume can be bit-exact: fairseq re-seeds torch's RNG with ``seed + num_updates`` before every
update (the dropout masks of update k do not depend on what ran before), shuffles each epoch with
``seed + epoch``, and the checkpoint holds the iterator position (``iterations_in_epoch``),
optimizer and scheduler state. The updates done after the checkpoint are lost and redone
identically. Bit-exactness needs the same CPU thread count (GEMM results depend on it).
"""

import os
import re
import shutil
import signal
import subprocess
import threading

import pytest
import torch
from fairseq import checkpoint_utils

import rdrop_fairseq  # noqa: F401  (registers the task and criterion, installs the loader)
from support import BIN, run_cli
from support.training import (
    as_in_a_new_process,
    curve,
    fairseq_train,
    last_state,
    output,
    train_args,
)

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # a 16-dim model: threads only add contention


def train_here(*args):
    """fairseq-train in this process; what it logged."""
    with as_in_a_new_process():
        run = fairseq_train(*args)
    assert run.error is None, run.output[-3000:]
    return run.output


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


def assert_same_state(expected_dir, got_dir, updates):
    expected, got = last_state(expected_dir), last_state(got_dir)
    assert got["optimizer_history"][-1]["num_updates"] == updates
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert tensors_equal(expected["last_optimizer_state"], got["last_optimizer_state"])
    assert (
        expected["optimizer_history"][-1]["lr_scheduler_state"]
        == got["optimizer_history"][-1]["lr_scheduler_state"]
    )


RESUME = dict(max_update=16, extra=("--save-interval-updates", "4"))


@pytest.fixture(scope="module")
def baseline(data_bin, tmp_path_factory):
    """An uninterrupted 16-update run (13 batches an epoch, so it ends in epoch 2)."""
    save = tmp_path_factory.mktemp("baseline")
    proc = run_cli(
        BIN / "fairseq-train",
        *train_args(data_bin, save, RESUME["max_update"], *RESUME["extra"]),
        env=ONE_THREAD,
    )
    return save, output(proc)


def test_resume_after_sigkill_mid_epoch_is_bit_exact(baseline, data_bin, tmp_path):
    base_dir, base_log = baseline
    args = [str(a) for a in train_args(data_bin, tmp_path, RESUME["max_update"], *RESUME["extra"])]
    proc = subprocess.Popen(
        [str(BIN / "fairseq-train"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, **ONE_THREAD),
    )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    killed_log, saved = [], False
    try:
        for line in proc.stdout:
            killed_log.append(line)
            saved = saved or re.search(r"Saved checkpoint \S*checkpoint_1_4\.pt", line)
            if saved and re.search(r"num_updates=6,", line):  # 2 updates past the checkpoint
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(killed_log[-30:])
    killed_log = "".join(killed_log)

    # what the kill left: the mid-epoch checkpoint at update 4 (8 or 12 if this process was
    # starved of CPU while the trainer ran on)
    state = last_state(tmp_path)
    saved_at = state["optimizer_history"][-1]["num_updates"]
    itr = state["extra_state"]["train_iterator"]
    assert saved_at in (4, 8, 12) and itr["epoch"] == 1 and itr["iterations_in_epoch"] == saved_at

    resumed = train_here(*args)
    assert re.search(
        rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch 1 @ {saved_at} updates\)", resumed
    )

    base, killed, after = curve(base_log), curve(killed_log), curve(resumed)
    assert sorted(base) == list(range(1, 17)) and base[16][0] == 2  # crossed an epoch boundary
    assert sorted(after) == list(range(saved_at + 1, 17))
    assert {u: base[u] for u in killed} == killed  # before the kill: same curve
    assert {u: base[u] for u in after} == after  # after resuming: same curve, bit-exact values
    assert_same_state(base_dir, tmp_path, 16)


def test_same_seed_gives_the_same_loss_curve_twice(baseline, data_bin, tmp_path):
    """The fairseq-train process of ``baseline`` and a run in this process."""
    base_dir, base_log = baseline
    again = train_here(*train_args(data_bin, tmp_path, RESUME["max_update"], *RESUME["extra"]))
    assert curve(again) == curve(base_log) and len(curve(again)) == 16
    first, second = last_state(base_dir)["model"], last_state(tmp_path)["model"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_checkpoint_last_survives_a_crash_while_it_is_replaced(tmp_path, monkeypatch):
    """fairseq copies the new checkpoint over checkpoint_last.pt; a kill or a full disk during
    that copy must leave the previous checkpoint_last.pt whole."""
    src, last = tmp_path / "checkpoint_1_8.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    last.write_bytes(b"old" * 1000)

    def copy_then_fail(a, b, *args, **kwargs):
        with open(b, "wb") as f:
            f.write(open(a, "rb").read()[:100])
        raise OSError("No space left on device")

    checkpoint_utils.PathManager.copy(str(src), str(tmp_path / "a-copy"))  # a first copy works
    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError):
        checkpoint_utils.PathManager.copy(str(src), str(last), overwrite=True)
    assert last.read_bytes() == b"old" * 1000
    monkeypatch.undo()
    assert checkpoint_utils.PathManager.copy(str(src), str(last), overwrite=True)
    assert last.read_bytes() == b"new" * 1000
