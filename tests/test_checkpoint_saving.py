"""Checkpoints that survive full disks, preemption and reruns (rdrop_fairseq/checkpoint_saving.py):
every checkpoint file whole or absent, a failed save in one line, SIGTERM saving and stopping,
reruns that never destroy, one run per --save-dir. Full disks are simulated below the file object
torch.save writes to (short writes, then ENOSPC); the preemption and lock tests run fairseq-train
on the tiny Transformer."""

import errno
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from types import SimpleNamespace

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from fairseq.trainer import Trainer

import rdrop_fairseq  # noqa: F401  (installs the changes)
from rdrop_fairseq import checkpoint_saving
from rdrop_fairseq.errors import UsageError
from support import BIN, LAUNCHER
from support.tiny_model import build
from support.training import curve, fairseq_train, last_state, train_args

STATE = {"model": {"w": torch.arange(60_000, dtype=torch.float32)}, "step": 7}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class DiskFull(io.FileIO):
    """A file system with ``room`` bytes left: a write that does not fit is short, the next one
    fails with ENOSPC, after which the room is ``then`` (space freed meanwhile) if set."""

    room, then, opened = 0, None, 0

    def __init__(self, name, mode="r", *args, **kwargs):
        super().__init__(name, mode, *args, **kwargs)
        DiskFull.opened += 1

    def write(self, data):
        if DiskFull.room <= 0:
            if DiskFull.then is not None:
                DiskFull.room, DiskFull.then = DiskFull.then, None
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), DiskFull.room)
        DiskFull.room -= n
        return super().write(memoryview(data).cast("B")[:n])


@pytest.fixture
def disk_full(monkeypatch):
    """Writes of checkpoint_saving go to a DiskFull file; set DiskFull.room and .then."""
    monkeypatch.setattr(DiskFull, "room", 0)
    monkeypatch.setattr(DiskFull, "then", None)
    monkeypatch.setattr(DiskFull, "opened", 0)
    monkeypatch.setattr(checkpoint_saving, "RETRY_DELAY", 0)
    monkeypatch.setattr(
        checkpoint_saving, "_File", type("Full", (checkpoint_saving._File, DiskFull), {})
    )
    return DiskFull


def whole(path):
    with zipfile.ZipFile(path) as archive:
        return archive.testzip() is None


def listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_full_disk_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, disk_full):
    target = tmp_path / "checkpoint_last.pt"
    torch.save({"old": torch.ones(3)}, target)
    before = listing(tmp_path)
    disk_full.room = 50_000  # the first try is cut short, the retries find no room at all
    with pytest.raises(OSError) as raised:
        checkpoint_utils.torch_persistent_save(STATE, str(target))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert disk_full.opened == checkpoint_saving.ATTEMPTS  # fairseq's retries, each a new file
    assert listing(tmp_path) == before


def test_a_retry_starts_a_new_file_where_fairseq_appends_to_the_half_written_one(
    tmp_path, disk_full, monkeypatch
):
    disk_full.room, disk_full.then = 50_000, 10**9  # full once, then freed
    target = tmp_path / "checkpoint_1_8.pt"
    checkpoint_utils.torch_persistent_save(STATE, str(target))
    assert whole(target) and torch.equal(torch.load(target)["model"]["w"], STATE["model"]["w"])
    assert disk_full.opened == 2 and [p.name for p in tmp_path.iterdir()] == [target.name]
    clean = io.BytesIO()
    torch.save(STATE, clean)
    assert target.read_bytes() == clean.getvalue()

    # fairseq's own retry, same failure: torch.save again into the half-written file
    monkeypatch.setattr(time, "sleep", lambda s: None)
    disk_full.room, disk_full.then = 50_000, 10**9
    with DiskFull(tmp_path / "fairseq.pt", "w") as f:
        checkpoint_utils._torch_persistent_save(STATE, f)
    appended = (tmp_path / "fairseq.pt").stat().st_size
    assert appended == 50_000 + len(clean.getvalue())


def test_a_second_signal_during_the_save_changes_nothing(tmp_path, monkeypatch, disk_full):
    monkeypatch.setattr(checkpoint_saving, "_signal", None)
    previous = signal.signal(signal.SIGTERM, checkpoint_saving._on_signal)
    disk_full.room = 10**9
    real_write = DiskFull.write

    def signalled_write(self, data):
        os.kill(os.getpid(), signal.SIGTERM)  # a signal at every write of the save
        return real_write(self, data)

    monkeypatch.setattr(DiskFull, "write", signalled_write)
    try:
        checkpoint_utils.torch_persistent_save(STATE, str(tmp_path / "checkpoint_last.pt"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert checkpoint_saving._signal == signal.SIGTERM
    assert whole(tmp_path / "checkpoint_last.pt")
    assert torch.load(tmp_path / "checkpoint_last.pt")["step"] == 7


def test_copies_replace_the_target_whole(tmp_path, monkeypatch):
    src, last = tmp_path / "checkpoint_1_8.pt", tmp_path / "checkpoint_last.pt"
    torch.save(STATE, src)
    torch.save({"old": 1}, last)
    fairseq_copy = tmp_path / "copied-by-fairseq.pt"
    torch.save({"old": 1}, fairseq_copy)
    inode = os.stat(fairseq_copy).st_ino
    PathManager.copy(str(src), str(fairseq_copy), overwrite=True)
    assert os.stat(fairseq_copy).st_ino == inode  # fairseq copies in place
    inode = os.stat(last).st_ino
    assert checkpoint_utils.PathManager.copy(str(src), str(last), overwrite=True)
    assert last.read_bytes() == src.read_bytes() and os.stat(last).st_ino != inode  # renamed

    def half_copy(a, b, *args, **kwargs):
        with open(a, "rb") as f, open(b, "wb") as g:
            g.write(f.read()[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = listing(tmp_path)
    monkeypatch.setattr(shutil, "copyfile", half_copy)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint_utils.PathManager.copy(str(src), str(last), overwrite=True)
    assert listing(tmp_path) == before


@pytest.fixture
def trainer(data_bin, tmp_path):
    """A fairseq Trainer of the tiny Transformer saving to tmp_path/save, as fairseq-train's."""

    def make(*extra):
        cfg, task, model, criterion = build(
            data_bin,
            extra=(
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
                "--save-dir",
                str(tmp_path / "save"),
                "--save-interval-updates",
                "1",
                "--no-epoch-checkpoints",
                *extra,
            ),
        )
        os.makedirs(cfg.checkpoint.save_dir, exist_ok=True)
        return cfg, Trainer(cfg, task, model, criterion)

    return make


ITERATOR = SimpleNamespace(
    epoch=1,
    end_of_epoch=lambda: False,
    state_dict=lambda: {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
)


@pytest.mark.parametrize("failing", ["first write", "copy to checkpoint_last.pt"])
def test_a_failed_save_is_one_line_and_keeps_the_earlier_checkpoints(
    trainer, tmp_path, disk_full, monkeypatch, caplog, failing
):
    cfg, tr = trainer()
    save = tmp_path / "save"
    disk_full.room = 10**9
    checkpoint_utils.save_checkpoint(cfg.checkpoint, tr, ITERATOR, None)  # a first, whole save
    tr.set_num_updates(1)
    before = listing(save)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "first write":
        disk_full.room, name = 50_000, "checkpoint_1_1.pt"
    else:
        monkeypatch.setattr(shutil, "copyfile", full)
        name = "checkpoint_last.pt"
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(UsageError) as raised:
        checkpoint_utils.save_checkpoint(cfg.checkpoint, tr, ITERATOR, None)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(
        f"cannot save checkpoint {save / name}: No space left on device; training stopped at "
        f"update 1; the checkpoints in {save} are as they were"
    )
    assert "Saved checkpoint" not in caplog.text
    after = listing(save)
    if failing == "copy to checkpoint_last.pt":  # the new file is whole; the last one untouched
        assert whole(save / "checkpoint_1_1.pt")
        after.pop("checkpoint_1_1.pt")
    assert after == before


def test_a_fresh_start_over_checkpoints_it_did_not_load_is_refused(trainer, tmp_path):
    cfg, tr = trainer("--no-last-checkpoints")
    save = tmp_path / "save"
    (save / "checkpoint_best.pt").write_bytes(b"the best model of last week")
    (save / "checkpoint_3.pt").write_bytes(b"epoch 3")
    before = listing(save)
    with pytest.raises(UsageError) as raised:
        checkpoint_utils.load_checkpoint(cfg.checkpoint, tr)
    assert str(raised.value) == (
        f"--save-dir {save} holds checkpoint_3.pt, checkpoint_best.pt but no checkpoint_last.pt: "
        "this run would start from scratch and write over them; resume with --restore-file "
        f"{save / 'checkpoint_3.pt'}, train into a new --save-dir, or start over here on purpose "
        "with --reset-optimizer"
    )
    assert listing(save) == before

    cfg, tr = trainer("--no-last-checkpoints", "--reset-optimizer")  # asked to start over
    _, itr = checkpoint_utils.load_checkpoint(cfg.checkpoint, tr)
    assert itr.epoch == 1 and tr.get_num_updates() == 0


def hold_lock(save, pid, host=None, slurm_job=None):
    save.mkdir(parents=True, exist_ok=True)
    holder = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "slurm_job": slurm_job,
        "started": "2026-01-01 00:00:00 UTC",
    }
    (save / checkpoint_saving.LOCK).write_text(json.dumps(holder))
    return holder


def test_the_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    lock = tmp_path / checkpoint_saving.LOCK
    with subprocess.Popen(["sleep", "60"]) as alive:
        hold_lock(tmp_path, alive.pid)
        with pytest.raises(
            UsageError,
            match=rf"^--save-dir {tmp_path} is in use by another run: "
            rf"process {alive.pid} on {socket.gethostname()}, started 2026-01-01",
        ):
            checkpoint_saving.take_lock(str(tmp_path))
        alive.kill()
    assert json.loads(lock.read_text())["pid"] == alive.pid  # left as it was

    hold_lock(tmp_path, alive.pid)  # now a dead process of this host
    with caplog.at_level(logging.WARNING):
        path = checkpoint_saving.take_lock(str(tmp_path))
    assert f"from process {alive.pid}" in caplog.text and "no longer running" in caplog.text
    me = json.loads(lock.read_text())
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    checkpoint_saving.release_lock(path, me)
    assert not lock.exists()

    hold_lock(tmp_path, 1, host="another-node")  # another host: cannot tell, refused
    with pytest.raises(UsageError, match="in use by another run: process 1 on another-node"):
        checkpoint_saving.take_lock(str(tmp_path))
    hold_lock(tmp_path, 1, host="another-node", slurm_job="4242")  # ... unless a requeued job
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    path = checkpoint_saving.take_lock(str(tmp_path))
    checkpoint_saving.release_lock(path, json.loads(lock.read_text()))
    assert not lock.exists()


def test_the_run_taking_the_lock_removes_what_killed_saves_left(tmp_path):
    stale, other = tmp_path / ".checkpoint_last.pt.4242.tmp", tmp_path / "notes.tmp"
    stale.write_bytes(b"half a checkpoint")
    other.write_text("not ours")
    checkpoint_utils.verify_checkpoint_directory(str(tmp_path))  # fairseq-train's first write
    lock = tmp_path / checkpoint_saving.LOCK
    assert not stale.exists() and other.exists() and lock.exists()
    checkpoint_saving.release_lock(str(lock), json.loads(lock.read_text()))
    assert sorted(os.listdir(tmp_path)) == ["notes.tmp"]


# -- fairseq-train --------------------------------------------------------------------------------


def test_sigterm_saves_stops_and_the_same_command_resumes(data_bin, tmp_path):
    """SIGTERM mid-epoch (and again while saving): checkpoint_last.pt of that update, one line, exit
    143; the same command resumes from that update; once done, a rerun writes nothing."""
    save = tmp_path / "save"
    args = [str(a) for a in train_args(data_bin, save, 200, "--save-interval-updates", "1000")]
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [str(BIN / "fairseq-train"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=dict(os.environ, **ONE_THREAD),
        )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    log, locked = [], False
    try:
        for line in proc.stdout:
            log.append(line)
            if not locked and re.search(r"num_updates=3,", line):
                locked = (save / checkpoint_saving.LOCK).exists()  # held while training
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)  # a second one changes nothing
    finally:
        watchdog.cancel()
        proc.wait()
    stderr = (tmp_path / "stderr").read_text()
    log = "".join(log)
    assert proc.returncode == 128 + signal.SIGTERM, log[-2000:] + stderr[-2000:]
    last_line = stderr.strip().splitlines()[-1]
    stopped = re.fullmatch(
        rf"stopped by SIGTERM at update (\d+) \(epoch (\d+)\): saved {save}/checkpoint_last\.pt; "
        r"to resume, run the same command again \(exit status 143\)",
        last_line,
    )
    assert stopped, last_line
    updates, epoch = int(stopped[1]), int(stopped[2])
    assert locked and 3 <= updates < 200 and max(curve(log)) == updates
    assert whole(save / "checkpoint_last.pt")
    assert set(os.listdir(save)) - {"checkpoint_best.pt"} == {"checkpoint_last.pt"}  # no lock
    state = last_state(save)
    assert state["optimizer_history"][-1]["num_updates"] == updates
    assert state["extra_state"]["train_iterator"]["epoch"] == epoch

    args[args.index("--max-update") + 1] = str(updates + 2)
    resumed = fairseq_train(*args)  # the same command, in this process from here on
    assert resumed.error is None, resumed.output[-3000:]
    assert re.search(
        rf"Loaded checkpoint \S*checkpoint_last\.pt \(epoch {epoch} @ {updates} "
        r"updates\)",
        resumed.output,
    )
    assert sorted(curve(resumed.output)) == [updates + 1, updates + 2]

    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in save.iterdir()}
    again = fairseq_train(*args)
    assert isinstance(again.error, SystemExit) and again.error.code == 0
    assert again.output.strip().splitlines()[-1] == (
        f"nothing to do: the checkpoint loaded is at update {updates + 2} (epoch {epoch}), so "
        "--max-update is reached; raise it to train on"
    )
    assert not curve(again.output)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in save.iterdir()} == before


def test_a_second_run_on_a_save_dir_in_use_is_one_line(data_bin, tmp_path):
    save = tmp_path / "save"
    with subprocess.Popen(["sleep", "120"]) as other:
        holder = hold_lock(save, other.pid)
        run = fairseq_train(*train_args(data_bin, save, 4))
        other.kill()
    assert isinstance(run.error, UsageError)
    assert str(run.error).startswith(
        f"--save-dir {save} is in use by another run: process {other.pid} on "
        f"{holder['host']}, started {holder['started']}"
    )
    assert os.listdir(save) == [checkpoint_saving.LOCK]  # nothing written, the lock left alone
    assert json.loads((save / checkpoint_saving.LOCK).read_text()) == holder


def rank_pid(launcher, rank):
    """The process id of the fairseq-train of ``rank`` started by the launcher ``launcher``."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline") as f:
                argv = f.read().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if (
            ppid == launcher
            and "--distributed-rank" in argv
            and argv[argv.index("--distributed-rank") + 1] == str(rank)
        ):
            return int(entry)
    raise AssertionError(f"no rank {rank} under process {launcher}")


def test_sigterm_to_one_of_two_ranks_stops_both_at_the_same_update(data_bin, tmp_path):
    """Only rank 1 gets the signal; rank 0 learns it at the same update (all-reduced), saves,
    and both exit 143 (a rank left training would wait for the other forever)."""
    save = tmp_path / "save"
    args = train_args(
        data_bin,
        save,
        200,
        "--dropout",
        "0",
        "--disable-validation",
        "--save-interval-updates",
        "1000",
    )
    proc = subprocess.Popen(
        [*LAUNCHER, "--nproc", "2", "--", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, **ONE_THREAD),
    )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    log, sent = [], False
    try:
        for line in proc.stdout:
            log.append(line)
            if not sent and re.search(r"^\[rank 0\] .*num_updates=3,", line):
                os.kill(rank_pid(proc.pid, 1), signal.SIGTERM)
                sent = True
    finally:
        watchdog.cancel()
        proc.wait()
    log = "".join(log)
    assert proc.returncode == 143, log[-3000:]
    stopped = re.findall(
        r"^\[rank (\d)\] stopped by SIGTERM at update (\d+) \(epoch \d+\): "
        rf"saved {save}/checkpoint_last\.pt",
        log,
        re.MULTILINE,
    )
    assert len(stopped) == 1 and stopped[0][0] == "0", log[-3000:]  # one line, from rank 0
    updates = int(stopped[0][1])
    assert max(curve(log)) == updates
    assert last_state(save)["optimizer_history"][-1]["num_updates"] == updates
    assert sorted(os.listdir(save)) == ["checkpoint_last.pt"]
