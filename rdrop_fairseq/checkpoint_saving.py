"""Checkpoint files whole or absent, a failed save in one line, SIGTERM/SIGUSR1 stopping all ranks
at one update after a save, reruns that never destroy, one run per ``--save-dir`` (see
docs/reliability.md); installed by ``fairseq_fixes.apply`` (off with RDROP_FAIRSEQ_NO_FIXES=1)."""

import atexit
import contextlib
import errno
import functools
import io
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import zipfile

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from .data_checks import is_local
from .errors import UsageError, run_by_fairseq_command_line
from .fairseq_fixes import MARK, NO_FIXES, _log_once, _set

ATTEMPTS, RETRY_DELAY = 3, 2.5  # as fairseq's _torch_persistent_save
LOCK = "rdrop-train.lock"


def _whole_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


class _File(io.FileIO):
    error = None  # the OSError of a write, which torch.save turns into a RuntimeError

    def write(self, data):
        view, done = memoryview(data).cast("B"), 0
        try:
            while done < len(view):
                done += super().write(view[done:])
        except OSError as e:
            self.error = e
            raise
        return done


def _fill(tmp, obj=None, src=None):
    if src is not None:
        shutil.copyfile(src, tmp)
    with _File(tmp, "w" if src is None else "r+") as f:
        try:
            if src is None:
                torch.save(obj, f)
        except RuntimeError as e:
            raise (f.error or e) from None  # the OSError that torch wrapped
        os.fsync(f.fileno())


def write_atomically(target, obj=None, src=None):
    """Replace ``target`` whole by ``obj`` (torch.save) or a copy of ``src``, or raise OSError."""
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        attempts = ATTEMPTS if src is None else 1  # fairseq retries torch.save only
        for attempt in range(attempts):  # each into an emptied file: never appends
            try:
                _fill(tmp, obj, src)
                break
            except OSError as e:
                if attempt == attempts - 1:
                    raise OSError(e.errno, e.strerror or str(e), target) from e
                time.sleep(RETRY_DELAY)
        if (src is None or _whole_zip(src)) and not _whole_zip(tmp):
            raise OSError(errno.EIO, "the written file is not a complete zip archive", target)
        os.replace(tmp, target)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as e:  # some file systems cannot fsync a directory
            if e.errno != errno.EINVAL:
                raise
        finally:
            os.close(fd)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _whole_or_absent_save(torch_persistent_save):
    @functools.wraps(torch_persistent_save)
    def wrapper(obj, filename, async_write=False):
        if async_write or not is_local(filename):
            return torch_persistent_save(obj, filename, async_write=async_write)
        _log_once("whole checkpoints", "checkpoints go to a temporary file, fsynced, renamed")
        write_atomically(filename, obj=obj)

    return wrapper


class _AtomicCopyPathManager(PathManager):
    @staticmethod
    def copy(src_path, dst_path, overwrite=False):
        if not (overwrite and is_local(src_path) and is_local(dst_path)):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        _log_once("atomic copy", "checkpoint_last.pt is replaced whole, not copied over")
        write_atomically(dst_path, src=src_path)
        return True


_saved_at = _signal = None  # the update of the last whole save; the first stop signal


def _save_errors_in_one_line(save_checkpoint):
    @functools.wraps(save_checkpoint)
    def wrapper(cfg, trainer, epoch_itr, val_loss):
        global _saved_at
        try:
            path = save_checkpoint(cfg, trainer, epoch_itr, val_loss)
        except OSError as e:
            raise UsageError(
                f"cannot save checkpoint {e.filename or cfg.save_dir}: {e.strerror or e}; training "
                f"stopped at update {trainer.get_num_updates()}; the checkpoints in {cfg.save_dir} "
                "are as they were (free space, then run the same command to resume)"
            ) from e
        _saved_at = trainer.get_num_updates()
        return path

    return wrapper


def _on_signal(signum, frame):  # a later signal changes nothing: the save goes on
    global _signal
    _signal = _signal or signum


def _exit(trainer, status):
    if trainer.data_parallel_world_size > 1:  # as fairseq's distributed_main, once all have saved
        torch.distributed.barrier(distributed_utils.get_global_group())
    raise SystemExit(status)


def _preemptible(validate_and_save):
    @functools.wraps(validate_and_save)
    def wrapper(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
        signum = (_signal or 0) if signal.getsignal(signal.SIGTERM) is _on_signal else 0
        if trainer.data_parallel_world_size > 1:  # all ranks stop at the same update
            flag = torch.tensor([signum], dtype=torch.int64, device=trainer.device)
            signum = int(
                distributed_utils.all_reduce(
                    flag, trainer.data_parallel_process_group, op="max"
                ).item()
            )
        if not signum or end_of_epoch:  # at the end of an epoch: its validation and save
            result = validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)
            if not signum:
                return result
        updates, ck = trainer.get_num_updates(), cfg.checkpoint
        if _saved_at != updates:
            checkpoint_utils.save_checkpoint(ck, trainer, epoch_itr, None)
        last = os.path.join(ck.save_dir, f"checkpoint_last{trainer.checkpoint_suffix}.pt")
        saved = "nothing saved" if ck.no_save or ck.no_last_checkpoints else f"saved {last}"
        if trainer.data_parallel_rank == 0:
            print(
                f"stopped by {signal.Signals(signum).name} at update {updates} (epoch "
                f"{epoch_itr.epoch}): {saved}; to resume, run the same command again "
                f"(exit status {128 + signum})",
                file=sys.stderr,
                flush=True,
            )
        _exit(trainer, 128 + signum)

    return wrapper


def _reruns_never_destroy(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(cfg, trainer, **kwargs):
        suffix, found = trainer.checkpoint_suffix, []
        if not (
            cfg.no_save
            or cfg.restore_file != "checkpoint_last.pt"
            or cfg.reset_optimizer
            or cfg.reset_lr_scheduler
            or cfg.reset_meters
            or cfg.reset_dataloader
            or cfg.finetune_from_model
            or getattr(cfg, "continue_once", None)
            or not is_local(cfg.save_dir)
            or not os.path.isdir(cfg.save_dir)
            or os.path.exists(os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt"))
        ):
            found = sorted(
                n
                for n in os.listdir(cfg.save_dir)  # this run would start afresh
                if n.startswith("checkpoint") and n.endswith(f"{suffix}.pt")
            )
        if found:
            raise UsageError(
                f"--save-dir {cfg.save_dir} holds {', '.join(found)} but no checkpoint_last"
                f"{suffix}.pt: this run would start from scratch and write over them; resume with "
                f"--restore-file {os.path.join(cfg.save_dir, found[0])}, train into a new "
                "--save-dir, or start over here on purpose with --reset-optimizer"
            )
        if run_by_fairseq_command_line():  # SIGTERM, SIGUSR1: stop after the update
            for signum in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(signum, _on_signal)
        extra_state, epoch_itr = load_checkpoint(cfg, trainer, **kwargs)
        opt, updates = trainer.cfg.optimization, trainer.get_num_updates()
        max_update, max_epoch = opt.max_update or float("inf"), opt.max_epoch or float("inf")
        if updates > 0 and (updates >= max_update or epoch_itr.next_epoch_idx > max_epoch):
            reached = "update" if updates >= max_update else "epoch"
            if trainer.data_parallel_rank == 0:
                print(
                    f"nothing to do: the checkpoint loaded is at update {updates} (epoch "
                    f"{epoch_itr.epoch}), so --max-{reached} is reached; raise it to train on",
                    file=sys.stderr,
                    flush=True,
                )
            _exit(trainer, 0)
        return extra_state, epoch_itr

    return wrapper


def _read_lock(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # also a lock being created, empty for a moment
        return {"pid": "?", "host": f"? ({path} is unreadable)"}


def _stale(holder, me):
    if holder.get("host") != me["host"]:
        same_job = holder.get("slurm_job") and holder["slurm_job"] == me["slurm_job"]
        return f"an earlier run of SLURM job {me['slurm_job']} (requeued)" if same_job else None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return "which is no longer running"
    except (OSError, KeyError, TypeError):  # alive (EPERM) or not a process id
        return None


def take_lock(save_dir):
    """Hold ``save_dir/rdrop-train.lock`` until this process exits; refuse a live holder."""
    path = os.path.join(save_dir, LOCK)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for _ in range(3):
        try:  # O_EXCL: atomic on local file systems and NFS v3+
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            atexit.register(release_lock, path, me)
            return path
        if (holder.get("pid"), holder.get("host")) == (me["pid"], me["host"]):
            return path  # held by this process already
        why = _stale(holder, me) if holder else "released"
        if why is None:
            raise UsageError(
                f"--save-dir {save_dir} is in use by another run: process {holder.get('pid')} "
                f"on {holder.get('host')}, started {holder.get('started')} (lock file {path}); "
                "wait for it to end or use another --save-dir (if that run is gone, delete the "
                "lock file)"
            )
        if holder:
            logging.getLogger(__name__).warning(
                "taking over %s from process %s on %s (started %s), %s",
                path,
                holder.get("pid"),
                holder.get("host"),
                holder.get("started"),
                why,
            )
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    raise UsageError(f"--save-dir {save_dir}: could not take the lock file {path}")


def release_lock(path, me):
    if _read_lock(path) == me:
        os.remove(path)


def _locked(verify_checkpoint_directory):
    @functools.wraps(verify_checkpoint_directory)
    def wrapper(save_dir):  # called by the rank that saves only, before it writes anything
        if is_local(save_dir):
            os.makedirs(save_dir, exist_ok=True)
            take_lock(save_dir)
            for name in os.listdir(save_dir):  # temporary files of runs killed while saving
                if name.startswith(".") and name.endswith(".tmp") and ".pt." in name:
                    os.remove(os.path.join(save_dir, name))
        return verify_checkpoint_directory(save_dir)

    return wrapper


def apply():
    """Install what is not yet (nothing with RDROP_FAIRSEQ_NO_FIXES=1); return the names."""
    if os.environ.get(NO_FIXES) == "1":
        return []
    trains = [
        m
        for m in (sys.modules.get("fairseq_cli.train"), sys.modules.get("__main__"))
        if getattr(getattr(m, "__spec__", None), "name", None) == "fairseq_cli.train"
    ]
    cu, changed = checkpoint_utils, []
    for owner, attribute, make, name in (
        (cu, "torch_persistent_save", _whole_or_absent_save, "whole-or-absent checkpoints"),
        (cu, "save_checkpoint", _save_errors_in_one_line, "failed save in one line"),
        (cu, "load_checkpoint", _reruns_never_destroy, "reruns never destroy"),
        (cu, "verify_checkpoint_directory", _locked, "save dir lock"),
        (cu, "PathManager", lambda _: _AtomicCopyPathManager, "atomic checkpoint copies"),
        *[(m, "validate_and_save", _preemptible, "stop on SIGTERM/SIGUSR1") for m in trains],
    ):
        if getattr(getattr(owner, attribute), MARK, None) != name:
            changed.append(_set(owner, attribute, make(getattr(owner, attribute)), name))
    return changed
