"""One clear line, not a traceback, for mistakes in the command line, the data or a checkpoint.

Errors the plugin can attribute to its user are raised as :class:`UsageError` (a ``ValueError``).
Once the plugin is imported (``--user-dir``), an uncaught ``UsageError`` is printed as
``error: <message>`` with exit status 1; ``RDROP_TRACEBACK=1`` shows the traceback as well. Every
other exception keeps Python's traceback. Besides the plugin's own checks, three fairseq failures
become ``UsageError``\\ s:

- a checkpoint that cannot be unpickled (truncated, not a checkpoint): fairseq shows the
  ``torch.load`` traceback;
- ``--restore-file`` naming a file that does not exist: fairseq silently trains from scratch and
  then overwrites ``checkpoint_last.pt`` in ``--save-dir`` (the default ``checkpoint_last.pt``, or
  an explicit path to it, still starts fresh when it is absent);
- ``--path`` naming a missing model file (fairseq-generate and friends).
"""

import functools
import os
import sys
import types

from fairseq import checkpoint_utils, utils
from fairseq.data import data_utils
from fairseq.file_io import PathManager


class UsageError(ValueError):
    """A mistake in the command line, the data or a checkpoint, explained in one line."""


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _excepthook(previous):
    def excepthook(exc_type, exc, tb):
        if issubclass(exc_type, UsageError) and not os.environ.get("RDROP_TRACEBACK"):
            sys.stderr.flush()
            print(f"error: {exc}", file=sys.stderr, flush=True)
        else:
            previous(exc_type, exc, tb)

    excepthook.rdrop_fairseq = True
    return excepthook


# -- data directories (called by the rdrop_translation task) ------------------------------------


def _local(path):
    return "://" not in path


def _languages(path):
    return sorted(n[len("dict."):-len(".txt")] for n in os.listdir(path)
                  if n.startswith("dict.") and n.endswith(".txt"))


def _pairs(path):
    return sorted({n.split(".")[1] for n in os.listdir(path)
                   if n.count(".") >= 2 and n.split(".")[1].count("-") == 1})


def check_dictionaries(data, source_lang, target_lang):
    """Every data directory exists and the first holds ``dict.{src,tgt}.txt`` (what the
    translation task's ``setup_task`` reads)."""
    if not data:
        return  # fairseq reports it
    paths = utils.split_paths(data)
    for path in filter(_local, paths):
        if not os.path.isdir(path):
            raise UsageError(f"data directory {path} does not exist")
    if not paths or not _local(paths[0]):
        return
    if source_lang is None or target_lang is None:
        source_lang, target_lang = data_utils.infer_language_pair(paths[0])
        if source_lang is None:
            raise UsageError(f"{paths[0]} holds no <split>.<src>-<tgt>.* files: "
                             "give the languages with -s/--source-lang and -t/--target-lang")
    for flag, lang in (("-s/--source-lang", source_lang), ("-t/--target-lang", target_lang)):
        if not os.path.isfile(os.path.join(paths[0], f"dict.{lang}.txt")):
            raise UsageError(
                f"{flag} {lang}: {paths[0]} has no dict.{lang}.txt "
                f"(its dictionaries: {', '.join(_languages(paths[0])) or 'none'})")


def missing_data_error(exc, data, split, source_lang, target_lang):
    """A :class:`UsageError` explaining a ``FileNotFoundError`` from ``load_dataset(split)``."""
    where = [p for p in utils.split_paths(data) if _local(p) and os.path.isdir(p)]
    found = "; ".join(f"{p}: {', '.join(_pairs(p)) or 'none'}" for p in where)
    return UsageError(f"no '{split}' data for {source_lang}-{target_lang} ({_first_line(exc)}); "
                      f"language pairs found: {found or 'none'}")


# -- checkpoints --------------------------------------------------------------------------------


class _TorchWithClearLoadErrors(types.ModuleType):
    """``torch`` as seen by ``fairseq.checkpoint_utils``: ``load`` explains unreadable files."""

    def __init__(self, inner):
        super().__init__("torch")
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load(self, f, *args, **kwargs):
        try:
            return self._inner.load(f, *args, **kwargs)
        except MemoryError:
            raise
        except Exception as e:
            name = getattr(f, "name", f)
            raise UsageError(f"cannot read checkpoint {name} ({_first_line(e)}): "
                             "the file is truncated, corrupt or not a fairseq checkpoint") from e


def _check_restore_file(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(cfg, trainer, **kwargs):
        restore = cfg.restore_file
        if restore != "checkpoint_last.pt":  # fairseq's default: start fresh when it is absent
            suffix = trainer.checkpoint_suffix
            path = restore.replace(".pt", suffix + ".pt") if suffix else restore
            last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
            if (_local(path) and not PathManager.exists(path)
                    and os.path.abspath(path) != os.path.abspath(last)):
                raise UsageError(
                    f"--restore-file {restore}: {path} does not exist (a relative path is read "
                    "from the current directory, not from --save-dir)")
        return load_checkpoint(cfg, trainer, **kwargs)

    wrapper.rdrop_fairseq = True
    return wrapper


def _check_model_files(load_ensemble):
    @functools.wraps(load_ensemble)
    def wrapper(*args, **kwargs):
        try:
            return load_ensemble(*args, **kwargs)
        except OSError as e:
            if str(e).startswith("Model file not found"):
                raise UsageError(f"--path: {e}") from e
            raise

    wrapper.rdrop_fairseq = True
    return wrapper


def apply():
    if not getattr(sys.excepthook, "rdrop_fairseq", False) and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook(sys.excepthook)
    if not isinstance(checkpoint_utils.torch, _TorchWithClearLoadErrors):
        checkpoint_utils.torch = _TorchWithClearLoadErrors(checkpoint_utils.torch)
    if not getattr(checkpoint_utils.load_checkpoint, "rdrop_fairseq", False):
        checkpoint_utils.load_checkpoint = _check_restore_file(checkpoint_utils.load_checkpoint)
    ensemble = checkpoint_utils.load_model_ensemble_and_task
    if not getattr(ensemble, "rdrop_fairseq", False):
        checkpoint_utils.load_model_ensemble_and_task = _check_model_files(ensemble)


apply()
