"""Every change the plugin makes to fairseq, applied by :func:`apply` when the plugin is imported.

Each fix is applied only where the installed fairseq still needs it (checked by behaviour where a
cheap check exists), at most once, and what was changed is logged once at INFO level.
``RDROP_FAIRSEQ_NO_FIXES=1`` leaves fairseq exactly as installed.

- Safe checkpoint loading: fairseq's checkpoint module loads with ``weights_only=True`` and an
  allowlist of exactly what fairseq checkpoints hold (:data:`ALLOWED_GLOBALS`). A checkpoint that
  holds anything else is refused with one line naming it; ``RDROP_TRUST_CHECKPOINTS=1`` loads such
  a file with the full unpickler, for a file the user trusts. An unreadable checkpoint is
  explained in one line (missing, empty, truncated zip or pickle, not a checkpoint). Files
  downloaded by ``load_model_ensemble_and_task_from_hf_hub`` keep torch's own default.
- ``--restore-file`` naming a missing file is an error (fairseq starts from scratch, then
  overwrites ``checkpoint_last.pt``); ``--path`` naming a missing model file is one line.
- Every sentence evaluated: fairseq main's ``batch_by_size`` drops the last batch when its size is
  not a multiple of ``--required-batch-size-multiple`` (fairseq #5036, #5351); it is appended.
- ``--bf16`` without a TPU: fairseq turns ``--bf16`` into ``--tpu`` (fairseq #4696) and then fails
  without ``torch_xla``; those flags are cleared, so bf16 trains on CUDA or, with ``--cpu``, the CPU.
- Crash-safe ``checkpoint_last.pt``: fairseq copies each new checkpoint over
  ``checkpoint_last.pt`` in place; the copy now goes to ``<name>.tmp`` and is renamed.
"""

import argparse
import contextvars
import functools
import importlib.util
import logging
import os
import pickle
import re
import tempfile
import types
import zipfile

import fairseq
import numpy as np
import torch
from fairseq import checkpoint_utils, options
from fairseq.data import data_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from .errors import UsageError, first_line, is_local

logger = logging.getLogger(__name__)

NO_FIXES = "RDROP_FAIRSEQ_NO_FIXES"
TRUST_CHECKPOINTS = "RDROP_TRUST_CHECKPOINTS"
MARK = "_rdrop_fairseq_fix"  # set on everything apply() installs

try:
    from numpy._core import multiarray  # numpy >= 2
except ImportError:
    from numpy.core import multiarray

# What fairseq 0.12 checkpoints pickle besides tensors, dicts, lists and OrderedDicts (found with
# torch.serialization.get_unsafe_globals_in_checkpoint on checkpoints of fairseq-train, with and
# without the plugin, --bf16, --eval-bleu): the model config as argparse.Namespace (``cfg.model``
# of a Transformer, ``args`` of older fairseq); numpy arrays (the BLEU counts in the metrics) and
# numpy scalars (a numpy validation score), which numpy 2 pickles as numpy._core.multiarray.* and
# numpy 1 as numpy.core.multiarray.*. Unpickling a numpy dtype builds an instance of its dtype
# class (numpy.dtypes.Int64DType, ...), so the numeric ones are allowed too.
_NUMERIC = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
            np.uint64, np.float16, np.float32, np.float64)
ALLOWED_GLOBALS = [
    argparse.Namespace, np.ndarray, np.dtype,
    *sorted({type(np.dtype(t)) for t in _NUMERIC} - {np.dtype}, key=str),
    *[(getattr(multiarray, name), f"{module}.{name}")
      for module in ("numpy._core.multiarray", "numpy.core.multiarray")
      for name in ("scalar", "_reconstruct")],
]

_downloaded = contextvars.ContextVar("rdrop_fairseq_downloaded", default=False)


def _mark(fix, name):
    setattr(fix, MARK, name)
    return fix


def _applied(obj):
    return getattr(obj, MARK, None) is not None


# -- safe checkpoint loading --------------------------------------------------------------------


def load_checkpoint_file(f, *args, **kwargs):
    """``torch.load`` for fairseq checkpoints: ``weights_only`` with :data:`ALLOWED_GLOBALS`
    (the full unpickler with ``RDROP_TRUST_CHECKPOINTS=1``); a failure is one :class:`UsageError`
    line saying what is wrong with the file."""
    kwargs.pop("weights_only", None)
    try:
        if os.environ.get(TRUST_CHECKPOINTS) == "1":
            return torch.load(f, *args, weights_only=False, **kwargs)
        registered = torch.serialization.get_safe_globals()
        with torch.serialization.safe_globals([g for g in ALLOWED_GLOBALS if g not in registered]):
            return torch.load(f, *args, weights_only=True, **kwargs)
    except MemoryError:
        raise
    except Exception as e:
        raise UsageError(unreadable_checkpoint(getattr(f, "name", f), e)) from e


def unreadable_checkpoint(path, exc):
    """One line saying why ``torch.load`` could not read the checkpoint ``path``."""
    message = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read checkpoint {path}: {exc.strerror}"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot read checkpoint {path}: {e.strerror or first_line(e)}"
    if not head:
        return f"checkpoint {path} is empty"
    if head.startswith(b"PK\x03\x04") and not _complete_zip(path):
        return f"checkpoint {path} is truncated or corrupt (a damaged zip archive)"
    if not head.startswith(b"PK") and head[:1] != b"\x80":
        return f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError) and message.startswith("Weights only load failed"):
        refused = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", message)
        if refused:
            what = refused[1] or refused[2]
            what = what if "." in what else f"builtins.{what}"  # torch drops the "builtins."
        else:
            reason = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            what = f"data that torch's weights_only unpickler refuses ({reason})"
        return (f"checkpoint {path} holds {what}, which the safe loader does not allow; "
                f"if you trust this file, set {TRUST_CHECKPOINTS}=1")
    if head[:1] == b"\x80" and (isinstance(exc, EOFError) or "unexpected EOF" in message):
        return f"checkpoint {path} is truncated (an incomplete pickle)"
    return f"cannot read checkpoint {path} ({first_line(exc)})"


def _complete_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


class _CheckpointTorch(types.ModuleType):
    """``torch`` as ``fairseq.checkpoint_utils`` sees it: ``load`` is :func:`load_checkpoint_file`,
    except for files downloaded from the Hugging Face hub."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        if _downloaded.get():
            return torch.load(f, *args, **kwargs)
        return load_checkpoint_file(f, *args, **kwargs)


def _torch_default_for_downloads(load_from_hub):
    @functools.wraps(load_from_hub)
    def wrapper(*args, **kwargs):
        token = _downloaded.set(True)
        try:
            return load_from_hub(*args, **kwargs)
        finally:
            _downloaded.reset(token)

    return wrapper


# -- missing checkpoint files -------------------------------------------------------------------


def _missing_restore_file_is_an_error(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(cfg, trainer, **kwargs):
        restore = cfg.restore_file
        if restore != "checkpoint_last.pt":  # fairseq's default: start fresh when it is absent
            suffix = trainer.checkpoint_suffix
            path = restore.replace(".pt", suffix + ".pt") if suffix else restore
            last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
            if (is_local(path) and not PathManager.exists(path)
                    and os.path.abspath(path) != os.path.abspath(last)):
                raise UsageError(
                    f"--restore-file {restore}: {path} does not exist (a relative path is read "
                    "from the current directory, not from --save-dir)")
        return load_checkpoint(cfg, trainer, **kwargs)

    return wrapper


def _missing_model_file_in_one_line(load_ensemble):
    @functools.wraps(load_ensemble)
    def wrapper(*args, **kwargs):
        try:
            return load_ensemble(*args, **kwargs)
        except OSError as e:
            if str(e).startswith("Model file not found"):
                raise UsageError(f"--path: {e}") from e
            raise

    return wrapper


# -- every sentence evaluated -------------------------------------------------------------------


def _drops_last_batch(batch_by_size):
    batches = batch_by_size(np.arange(3, dtype=np.int64), lambda i: 1, max_sentences=2,
                            required_batch_size_multiple=2)
    return sum(len(b) for b in batches) < 3


def _keep_last_batch(batch_by_size):
    @functools.wraps(batch_by_size)
    def wrapper(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None,
                max_sentences=None, required_batch_size_multiple=1, fixed_shapes=None):
        if not isinstance(indices, np.ndarray):
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = batch_by_size(
            indices, num_tokens_fn, num_tokens_vec=num_tokens_vec, max_tokens=max_tokens,
            max_sentences=max_sentences, required_batch_size_multiple=required_batch_size_multiple,
            fixed_shapes=fixed_shapes)
        batched = sum(len(batch) for batch in batches)
        if fixed_shapes is None and batched < len(indices):
            batches = list(batches) + [indices[batched:]]
        return batches

    return wrapper


# -- --bf16 without a TPU -----------------------------------------------------------------------


def _bf16_turns_on_tpu():
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--batch-size")
    try:
        return options.parse_args_and_arch(parser, ["--bf16"]).tpu
    except Exception:  # cannot tell: the fix acts only where it sees the flags
        return True


def _bf16_without_tpu(call_main):
    @functools.wraps(call_main)
    def wrapper(cfg, main, **kwargs):
        if cfg.common.bf16 and cfg.common.tpu:
            for key in cfg:  # cfg.common, cfg.distributed_training, cfg.optimizer, ... all copy it
                group = cfg[key]
                if getattr(group, "tpu", False):
                    setattr(group, "tpu", False)
            logger.info("--bf16 without torch_xla: training in bfloat16 on %s, not on a TPU",
                        "the CPU" if cfg.common.cpu else "CUDA if available")
        return call_main(cfg, main, **kwargs)

    return wrapper


# -- crash-safe checkpoint_last.pt --------------------------------------------------------------


def _copies_in_place(path_manager):
    with tempfile.TemporaryDirectory() as folder:
        new, old = os.path.join(folder, "new"), os.path.join(folder, "old")
        for path in (new, old):
            open(path, "wb").close()
        inode = os.stat(old).st_ino
        path_manager.copy(new, old, overwrite=True)
        return os.stat(old).st_ino == inode


class _AtomicCopyPathManager(PathManager):
    """``PathManager`` as ``fairseq.checkpoint_utils`` sees it: local copies replace atomically."""

    @staticmethod
    def copy(src_path, dst_path, overwrite=False):
        if not PathManager.supports_rename(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite=overwrite)
        tmp = dst_path + ".tmp"
        PathManager.copy(src_path, tmp, overwrite=True)
        os.replace(tmp, dst_path)
        return True


# -- apply --------------------------------------------------------------------------------------


def _set(owner, attribute, fix, name):
    setattr(owner, attribute, _mark(fix, name))
    return name


def apply():
    """Apply the fixes the installed fairseq needs and has not got yet; return their names."""
    if os.environ.get(NO_FIXES) == "1":
        return []
    cu = checkpoint_utils
    changed = []
    if not _applied(cu.torch):
        changed.append(_set(cu, "torch", _CheckpointTorch("torch"), "safe checkpoint loading"))
    if hasattr(cu, "load_model_ensemble_and_task_from_hf_hub") and not _applied(
            cu.load_model_ensemble_and_task_from_hf_hub):
        _set(cu, "load_model_ensemble_and_task_from_hf_hub",
             _torch_default_for_downloads(cu.load_model_ensemble_and_task_from_hf_hub),
             "torch's default for downloaded checkpoints")
    if not _applied(cu.load_checkpoint):
        changed.append(_set(cu, "load_checkpoint",
                            _missing_restore_file_is_an_error(cu.load_checkpoint),
                            "missing --restore-file is an error"))
    if not _applied(cu.load_model_ensemble_and_task):
        changed.append(_set(cu, "load_model_ensemble_and_task",
                            _missing_model_file_in_one_line(cu.load_model_ensemble_and_task),
                            "missing --path in one line"))
    if _drops_last_batch(data_utils.batch_by_size):
        changed.append(_set(data_utils, "batch_by_size",
                            _keep_last_batch(data_utils.batch_by_size), "last batch kept"))
    if (not _applied(distributed_utils.call_main) and _bf16_turns_on_tpu()
            and importlib.util.find_spec("torch_xla") is None):
        changed.append(_set(distributed_utils, "call_main",
                            _bf16_without_tpu(distributed_utils.call_main), "--bf16 without TPU"))
    if _copies_in_place(cu.PathManager):
        changed.append(_set(cu, "PathManager", _AtomicCopyPathManager,
                            "atomic copy to checkpoint_last.pt"))
    if changed:
        logger.info("fixes to fairseq %s: %s (%s=1 turns them off)", fairseq.__version__,
                    ", ".join(changed), NO_FIXES)
    return changed
