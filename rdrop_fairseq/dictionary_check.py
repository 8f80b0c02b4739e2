"""Checkpoints remember their dictionaries; data with other dictionaries is refused.

A model only means something with the dictionaries it was trained with: fairseq loads a
checkpoint with data whose ``dict.*.txt`` is reordered without a word (and translates garbage),
and fails with a size-mismatch traceback when it has another size. Every checkpoint saved with the
plugin records a fingerprint of its source and target dictionaries
(``extra_state["rdrop_dictionaries"]``: symbol count and sha256 of the symbol list). Resuming,
``--restore-file``/``--finetune-from-model``, fairseq-generate/-interactive/-validate and
``load_model_ensemble_and_task`` check it right after the checkpoint is read, before its
parameters are loaded, and a mismatch is one :class:`~.errors.UsageError` line naming the
checkpoint and the data directory; ``rdrop-export`` checks its ``--data`` with
:func:`data_mismatch`. Checkpoints without a fingerprint load as before.
"""

import contextlib
import functools
import hashlib
import inspect
import os

from fairseq import checkpoint_utils, tasks, trainer

from .errors import UsageError

KEY = "rdrop_dictionaries"
_active = []  # the loads under way: [{"task": task or None, "states": [(path, fingerprints)]}]


def fingerprint(dictionary):
    """{"size": symbol count, "sha256": hash of the symbols in order} of a fairseq Dictionary."""
    symbols = "\n".join(dictionary.symbols).encode("utf-8")
    return {"size": len(dictionary.symbols), "sha256": hashlib.sha256(symbols).hexdigest()}


def _dictionaries(task):
    found = {}
    for side in ("source", "target"):
        try:
            dictionary = getattr(task, f"{side}_dictionary")
        except (AttributeError, NotImplementedError):
            dictionary = None
        if dictionary is not None and hasattr(dictionary, "symbols"):
            found[side] = dictionary
    return found


def fingerprints(task):
    return {side: fingerprint(d) for side, d in _dictionaries(task).items()}


def recorded(state):
    """The fingerprints a checkpoint ``state`` records, or None."""
    extra = state.get("extra_state") if isinstance(state, dict) else None
    found = extra.get(KEY) if isinstance(extra, dict) else None
    return found if isinstance(found, dict) else None


def _data_file(task, side):
    cfg = getattr(task, "cfg", None)
    data = str(getattr(cfg, "data", "") or "").split(os.pathsep)[0]
    lang = getattr(cfg, "source_lang" if side == "source" else "target_lang", None)
    return os.path.join(data, f"dict.{lang}.txt") if data and lang else data or "the data"


def mismatch(path, state_fingerprints, dictionaries, files, resuming=False):
    """Why ``dictionaries`` ({side: Dictionary}, read from ``files`` {side: path}) are not those
    the checkpoint ``path`` records, in one line; None when they are (or it records none)."""
    for side, dictionary in dictionaries.items():
        then, now = (state_fingerprints or {}).get(side), fingerprint(dictionary)
        if not isinstance(then, dict) or then == now:
            continue
        how = (
            f"{then['size']} symbols in the checkpoint, {now['size']} here"
            if then.get("size") != now["size"]
            else "the same symbols in another order"
        )
        return (
            f"checkpoint {path} was trained with another {side} dictionary than "
            f"{files[side]} ({how}): use the data directory it was trained on (or binarize "
            "new data with its dictionaries: fairseq-preprocess --srcdict/--tgtdict)"
            + ("; to train a new model on this data, use a new --save-dir" if resuming else "")
        )
    return None


def check(path, state_fingerprints, task, resuming=False):
    """A :class:`UsageError` unless the dictionaries of ``task`` are those of the checkpoint."""
    if state_fingerprints and task is not None:
        found = _dictionaries(task)
        problem = mismatch(
            path,
            state_fingerprints,
            found,
            {side: _data_file(task, side) for side in found},
            resuming,
        )
        if problem:
            raise UsageError(problem)


def data_mismatch(path, state, data, source_lang, target_lang):
    """:func:`mismatch` for the ``dict.{lang}.txt`` files of the folder ``data``."""
    from fairseq.data import Dictionary

    files = {
        "source": os.path.join(data, f"dict.{source_lang}.txt"),
        "target": os.path.join(data, f"dict.{target_lang}.txt"),
    }
    return mismatch(
        path, recorded(state), {side: Dictionary.load(f) for side, f in files.items()}, files
    )


@contextlib.contextmanager
def _checking(task, resuming=False):
    _active.append({"task": task, "states": [], "resuming": resuming})
    try:
        yield
    finally:
        _active.pop()


# -- the wrappers -------------------------------------------------------------------------------


def _record_in_state(state_dict):
    @functools.wraps(state_dict)
    def wrapper(self, *args, **kwargs):
        state = state_dict(self, *args, **kwargs)
        found = fingerprints(self.task) if self.task is not None else {}
        if found and isinstance(state.get("extra_state"), dict):
            state["extra_state"][KEY] = found
        return state

    return wrapper


def _checked_on_read(load_checkpoint_to_cpu):
    @functools.wraps(load_checkpoint_to_cpu)
    def wrapper(path, *args, **kwargs):
        state = load_checkpoint_to_cpu(path, *args, **kwargs)
        if _active:
            load = _active[-1]
            load["states"].append((path, recorded(state)))
            check(path, recorded(state), load["task"], load["resuming"])
        return state

    return wrapper


def _task_checked(setup_task):
    @functools.wraps(setup_task)
    def wrapper(*args, **kwargs):
        task = setup_task(*args, **kwargs)
        if _active and _active[-1]["task"] is None:
            _active[-1]["task"] = task
            for path, found in _active[-1]["states"]:
                check(path, found, task, _active[-1]["resuming"])
        return task

    return wrapper


def _trainer_load_checked(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(self, *args, **kwargs):
        with _checking(self.task, resuming=True):
            return load_checkpoint(self, *args, **kwargs)

    return wrapper


def _ensemble_load_checked(load_ensemble):
    signature = inspect.signature(load_ensemble)

    @functools.wraps(load_ensemble)
    def wrapper(*args, **kwargs):
        with _checking(signature.bind(*args, **kwargs).arguments.get("task")):
            return load_ensemble(*args, **kwargs)

    return wrapper


def fixes():
    """(owner, attribute, wrapper factory, name) of each change this module makes."""
    cu = checkpoint_utils
    return [
        (trainer.Trainer, "state_dict", _record_in_state, "dictionary fingerprints saved"),
        (cu, "load_checkpoint_to_cpu", _checked_on_read, "dictionaries checked on load"),
        (tasks, "setup_task", _task_checked, "dictionaries checked on load (task)"),
        (
            trainer.Trainer,
            "load_checkpoint",
            _trainer_load_checked,
            "dictionaries checked on resume",
        ),
        (
            cu,
            "load_model_ensemble_and_task",
            _ensemble_load_checked,
            "dictionaries checked on generate",
        ),
    ]
