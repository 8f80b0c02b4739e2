"""Resuming in a later epoch trains on the batches of the run that never stopped.

fairseq builds the training batches once per process and reuses them for every later epoch
(``FairseqTask.get_batch_iterator`` caches the ``EpochBatchIterator``; each epoch only reshuffles
the batch order with ``--seed`` + epoch). The batches themselves are cut from
``dataset.ordered_indices()``, which breaks ties between sentences of equal length with a
permutation drawn under ``numpy_seed(seed + epoch)``, ``epoch`` being the one the iterator is
*created* in. An uninterrupted run creates it in epoch 1; a run resumed from a checkpoint of
epoch e > 1 (``load_checkpoint`` calls ``get_train_iterator(epoch=e)``) creates it in epoch e,
so from epoch e on it trains on other batches: resumed inside an epoch, the batches skipped as
already done are not the ones that were done, and some sentences are trained twice in that epoch
and others never.

:func:`install` wraps ``Trainer.get_train_iterator``: when it has just created an iterator that
fairseq will reuse, in an epoch e > 1, the batches are built again as in epoch 1; where they
differ (checked at that use, so a fairseq that no longer has the bug is left alone) the epoch-1
batches are used, and that is logged once. Iterators fairseq does not reuse (sharded data,
``--update-epoch-batch-itr``, ``rebuild_batches``) are built per epoch by both runs alike and are
left as they are.

Resuming from a ``checkpoint_last.pt`` whose model does not fit the command line (another
architecture or dictionary size) is one :class:`~.errors.UsageError` line saying how to start
fresh, not fairseq's "please ensure that the architectures match" traceback.
"""

import functools
import inspect
import os
import re

import numpy as np
from fairseq import trainer

from .errors import UsageError, first_line
from .fairseq_fixes import _log_once

NAME = "resumed epochs keep the batches of epoch 1"


def _new_reused_iterator(task, itr, cached_before):
    """The dataset whose cached iterator ``itr`` was created by this call, else None."""
    cache = getattr(task, "dataset_to_epoch_iter", None)
    if not isinstance(cache, dict) or any(itr is old for old in cached_before):
        return None
    return next((dataset for dataset, value in cache.items() if value is itr), None)


def _same_batches(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def keep_first_epoch_batches(get_train_iterator):
    signature = inspect.signature(get_train_iterator)

    @functools.wraps(get_train_iterator)
    def wrapper(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs)
        cache = getattr(self.task, "dataset_to_epoch_iter", None)
        before = list(cache.values()) if isinstance(cache, dict) else []
        itr = get_train_iterator(*call.args, **call.kwargs)
        epoch = call.arguments["epoch"]
        dataset = _new_reused_iterator(self.task, itr, before)
        if epoch <= 1 or dataset is None or callable(getattr(itr, "batch_sampler", None)):
            return itr
        # a run that never stopped created this iterator in epoch 1: build its batches so
        del self.task.dataset_to_epoch_iter[dataset]
        call.arguments.update(epoch=1, load_dataset=False)
        first = get_train_iterator(*call.args, **call.kwargs)
        if _same_batches(itr.frozen_batches, first.frozen_batches):
            self.task.dataset_to_epoch_iter[dataset] = itr
            return itr
        first.epoch = itr.epoch  # otherwise as fairseq made it: in epoch e
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        _log_once(
            NAME,
            f"resuming in epoch {epoch}, the training batches are those a run that "
            "never stopped built in epoch 1 (fairseq builds other ones)",
        )
        return first

    return wrapper


def resumable_alternatives(path):
    """For an unreadable ``.../checkpoint_last*.pt``: ``; resume from ...`` naming
    checkpoint_best.pt and the newest other checkpoint beside it that exist; else ``""``."""
    if not isinstance(path, str) or not os.path.basename(path).startswith("checkpoint_last"):
        return ""
    folder = os.path.dirname(path) or "."
    found = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if re.fullmatch(r"checkpoint(_best|\d+|_\d+_\d+)\.pt", name)
    ]
    found = [p for p in found if os.path.isfile(p) and os.path.getsize(p) > 0]
    if not found:
        return ""
    best = [p for p in found if p.endswith("checkpoint_best.pt")]
    newest = sorted(set(found) - set(best), key=os.path.getmtime)[-1:]
    names = " or ".join(f"--restore-file {p}" for p in best + newest)
    return (
        f"; resume from an older checkpoint with {names} (given once: later runs resume "
        "from the checkpoint_last.pt it writes)"
    )


MISMATCH = "Cannot load model parameters from checkpoint"


def _mismatch(exc):
    """The first size mismatch / missing / unexpected key line of ``load_state_dict``'s error."""
    cause = exc.__cause__ or exc.__context__
    lines = [line.strip() for line in str(cause or "").splitlines()[1:] if line.strip()]
    return lines[0].rstrip(".") if lines else first_line(cause or exc)


def _model_mismatch_in_one_line(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(self, filename, *args, **kwargs):
        try:
            return load_checkpoint(self, filename, *args, **kwargs)
        except Exception as e:
            if not str(e).startswith(MISMATCH):
                raise
            raise UsageError(
                f"cannot resume from {filename}: its model is not the one this command line "
                f"builds (another --arch, model size or dictionary size; {_mismatch(e)}); to "
                f"start a new run, use a new --save-dir (or move {filename} away), or resume "
                f"with the options it was trained with; --reset-optimizer and the other --reset-* "
                "flags still load its parameters"
            ) from e

    return wrapper


def fixes():
    """(owner, attribute, wrapper factory, name) of each change this module makes."""
    return [
        (trainer.Trainer, "get_train_iterator", keep_first_epoch_batches, NAME),
        (
            trainer.Trainer,
            "load_checkpoint",
            _model_mismatch_in_one_line,
            "another model in checkpoint_last.pt in one line",
        ),
    ]
