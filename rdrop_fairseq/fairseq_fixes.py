"""The plugin's changes to fairseq's behaviour, installed by :func:`apply` when the plugin is
imported: fairseq bugs, and fairseq failures turned into one ``error:`` line before any work.

Each is installed at most once and is lazy: its wrapper checks at its first use, by behaviour,
whether the installed fairseq still has the bug (nothing is probed at import: no argument parser
is parsed, no file written), acts only then, and logs once at INFO level what it changed.
``RDROP_FAIRSEQ_NO_FIXES=1`` leaves fairseq exactly as installed (checkpoint loading is apart:
:mod:`.checkpoint_loading`).

- ``--restore-file`` naming a missing file is an error (fairseq starts from scratch, then
  overwrites ``checkpoint_last.pt``); ``--path`` naming a missing model file is one line.
- Every sentence evaluated: fairseq main's ``batch_by_size`` drops the last batch when its size is
  not a multiple of ``--required-batch-size-multiple`` (fairseq #5036, #5351); it is appended to
  evaluation data (valid, test, generation). Training batches stay fairseq's own.
- ``--bf16`` without a TPU: fairseq turns ``--bf16`` into ``--tpu`` (fairseq #4696) and then fails
  without ``torch_xla``; those flags are cleared, so bf16 trains on CUDA or, with ``--cpu``, on
  the CPU.
- ``--fp16``/``--amp`` on a machine without CUDA: one line before any work (fairseq fails
  in its optimizer after loading the data).
- Exact resume in any epoch, dictionary fingerprints in checkpoints, one-line resume and data
  errors: :mod:`.resume`, :mod:`.dictionary_check`, :mod:`.data_errors`, installed from
  :func:`apply`.
- Checkpoints whole or absent, preemption, safe reruns, a lock per ``--save-dir``:
  :mod:`.checkpoint_saving`, installed from :func:`apply`.
- A loss or gradient that turns NaN/inf stops training with one line naming the likely causes
  (fairseq raises ``FloatingPointError``); the checkpoints already saved are left as they were.
"""

import contextvars
import functools
import importlib.util
import logging
import os

import fairseq
import numpy as np
import torch
from fairseq import checkpoint_utils, trainer
from fairseq.data import data_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from .data_checks import is_local
from .errors import UsageError

logger = logging.getLogger(__name__)

NO_FIXES = "RDROP_FAIRSEQ_NO_FIXES"
MARK = "_rdrop_fairseq_fix"  # set on everything apply() installs


def _applied(obj):
    return getattr(obj, MARK, None) is not None


def _installed(function, name):
    """Whether the change ``name`` wraps ``function`` (perhaps under other changes)."""
    while function is not None and getattr(function, MARK, None) != name:
        function = getattr(function, "__wrapped__", None)
    return function is not None


_logged = set()


def _log_once(name, what):
    if name not in _logged:
        _logged.add(name)
        logger.info("fairseq %s: %s", fairseq.__version__, what)


def _probe_once(probe):
    """``probe()`` run at the first call only (its answer cached)."""
    return functools.lru_cache(maxsize=None)(probe)


# -- missing checkpoint files -------------------------------------------------------------------


def _missing_restore_file_is_an_error(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapper(cfg, trainer, **kwargs):
        restore = cfg.restore_file
        if restore != "checkpoint_last.pt":  # fairseq's default: start fresh when it is absent
            suffix = trainer.checkpoint_suffix
            path = restore.replace(".pt", suffix + ".pt") if suffix else restore
            last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
            if (
                is_local(path)
                and not PathManager.exists(path)
                and os.path.abspath(path) != os.path.abspath(last)
            ):
                raise UsageError(
                    f"--restore-file {restore}: {path} does not exist (a relative path is read "
                    "from the current directory, not from --save-dir)"
                )
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
    batches = batch_by_size(
        np.arange(3, dtype=np.int64), lambda i: 1, max_sentences=2, required_batch_size_multiple=2
    )
    return sum(len(b) for b in batches) < 3


#: set while the Trainer builds its training batches, which stay exactly fairseq's
_building_training_batches = contextvars.ContextVar("rdrop_training_batches", default=False)


def _training_batches_as_installed(get_train_iterator):
    """Trainer.get_train_iterator with the last-batch fix off: training batches are fairseq's own
    (a run with the plugin and the stock task trains bit for bit like one without it)."""

    @functools.wraps(get_train_iterator)
    def wrapper(*args, **kwargs):
        token = _building_training_batches.set(True)
        try:
            return get_train_iterator(*args, **kwargs)
        finally:
            _building_training_batches.reset(token)

    return wrapper


def _keep_last_batch(batch_by_size):
    """batch_by_size keeping the last batch of evaluation data (valid, test, generation)."""
    buggy = _probe_once(lambda: _drops_last_batch(batch_by_size))

    @functools.wraps(batch_by_size)
    def wrapper(
        indices,
        num_tokens_fn,
        num_tokens_vec=None,
        max_tokens=None,
        max_sentences=None,
        required_batch_size_multiple=1,
        fixed_shapes=None,
    ):
        if not isinstance(indices, np.ndarray):
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = batch_by_size(
            indices,
            num_tokens_fn,
            num_tokens_vec=num_tokens_vec,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
            fixed_shapes=fixed_shapes,
        )
        if fixed_shapes is None and not _building_training_batches.get() and buggy():
            batched = sum(len(batch) for batch in batches)
            if batched < len(indices):
                _log_once("last batch", "the last batch, dropped by batch_by_size, is kept")
                batches = list(batches) + [indices[batched:]]
        return batches

    return wrapper


# -- precision flags: --bf16 without a TPU, --fp16 without CUDA ---------------------------------


def _check_precision(cfg):
    common = cfg.common
    if common.bf16 and common.tpu and importlib.util.find_spec("torch_xla") is None:
        for key in cfg:  # cfg.common, cfg.distributed_training, cfg.optimizer, ... all copy it
            group = cfg[key]
            if getattr(group, "tpu", False):
                group.tpu = False
        _log_once(
            "bf16",
            "--bf16 without torch_xla: training in bfloat16 on "
            + ("the CPU" if common.cpu else "CUDA if available")
            + ", not on a TPU",
        )
    half = [
        flag
        for flag, on in (
            ("--fp16", common.fp16),
            ("--memory-efficient-fp16", common.memory_efficient_fp16),
            ("--amp", common.amp),
        )
        if on
    ]
    if half and (common.cpu or not torch.cuda.is_available()):
        where = "with --cpu" if common.cpu else "on this machine: torch sees no CUDA device"
        raise UsageError(
            f"{half[0]} trains on CUDA only, {where}; leave it out "
            "(--bf16 --cpu trains in bfloat16 on the CPU)"
        )


def _precision_checked(call_main):
    @functools.wraps(call_main)
    def wrapper(cfg, main, **kwargs):
        _check_precision(cfg)
        return call_main(cfg, main, **kwargs)

    return wrapper


# -- a loss or gradient that turns NaN/inf ------------------------------------------------------

NON_FINITE = ("gradients are Nan/Inf", "Minimum loss scale reached")


def non_finite_error(exc, trainer_):
    """The one line for fairseq's ``FloatingPointError`` about a NaN/inf loss or gradient."""
    cfg = trainer_.cfg
    causes = []
    alpha = getattr(trainer_.criterion, "rdrop_alpha", None)
    if alpha:
        causes.append(f"--rdrop-alpha {alpha:g} too large")
    causes.append(f"--lr {cfg.optimization.lr[0]:g} too high")
    if cfg.common.fp16 or cfg.common.memory_efficient_fp16 or cfg.common.amp:
        causes.append("fp16 overflow (try --bf16 or a smaller --fp16-init-scale)")
    save_dir = cfg.checkpoint.save_dir
    return UsageError(
        f"training stopped at update {trainer_.get_num_updates() + 1}: the loss or its gradient "
        f"is not finite (fairseq: {str(exc).splitlines()[0]}); likely causes: "
        f"{', '.join(causes)}; the checkpoints in {save_dir} are as they were (fairseq wrote "
        f"the failing state to {os.path.join(save_dir, 'crash.pt')})"
    )


def _non_finite_in_one_line(train_step):
    @functools.wraps(train_step)
    def wrapper(self, *args, **kwargs):
        try:
            return train_step(self, *args, **kwargs)
        except Exception as e:
            # fairseq re-runs the step under its NanDetector, which can fail in turn (then the
            # FloatingPointError is the context of what it raises)
            cause = e
            while cause is not None and not (
                isinstance(cause, FloatingPointError)
                and any(text in str(cause) for text in NON_FINITE)
            ):
                cause = cause.__context__
            if cause is None:
                raise
            raise non_finite_error(cause, self) from e

    return wrapper


# -- apply --------------------------------------------------------------------------------------


def _set(owner, attribute, fix, name):
    setattr(fix, MARK, name)
    setattr(owner, attribute, fix)
    return name


def apply():
    """Install the changes not installed yet (none with ``RDROP_FAIRSEQ_NO_FIXES=1``); return
    their names. Each acts only where, at its first use, fairseq turns out to need it."""
    if os.environ.get(NO_FIXES) == "1":
        return []
    cu, changed = checkpoint_utils, []
    if not _applied(cu.load_checkpoint):
        changed.append(
            _set(
                cu,
                "load_checkpoint",
                _missing_restore_file_is_an_error(cu.load_checkpoint),
                "missing --restore-file is an error",
            )
        )
    if not _applied(cu.load_model_ensemble_and_task):
        changed.append(
            _set(
                cu,
                "load_model_ensemble_and_task",
                _missing_model_file_in_one_line(cu.load_model_ensemble_and_task),
                "missing --path in one line",
            )
        )
    if not _applied(data_utils.batch_by_size):
        changed.append(
            _set(
                data_utils,
                "batch_by_size",
                _keep_last_batch(data_utils.batch_by_size),
                "last batch kept",
            )
        )
    if not _installed(trainer.Trainer.get_train_iterator, "training batches as fairseq's"):
        changed.append(
            _set(
                trainer.Trainer,
                "get_train_iterator",
                _training_batches_as_installed(trainer.Trainer.get_train_iterator),
                "training batches as fairseq's",
            )
        )
    if not _applied(distributed_utils.call_main):
        changed.append(
            _set(
                distributed_utils,
                "call_main",
                _precision_checked(distributed_utils.call_main),
                "--bf16 without TPU, --fp16 without CUDA",
            )
        )
    if not _applied(trainer.Trainer.train_step):
        changed.append(
            _set(
                trainer.Trainer,
                "train_step",
                _non_finite_in_one_line(trainer.Trainer.train_step),
                "non-finite loss in one line",
            )
        )
    from . import data_errors, dictionary_check, resume  # noqa: E402 (their own modules)

    for owner, attribute, fix, name in (
        resume.fixes() + dictionary_check.fixes() + data_errors.fixes()
    ):
        if not _installed(getattr(owner, attribute), name):
            changed.append(_set(owner, attribute, fix(getattr(owner, attribute)), name))
    from . import checkpoint_saving  # noqa: E402 (its own module)

    changed += checkpoint_saving.apply()
    if changed:
        logger.info(
            "changes to fairseq %s (each where fairseq needs it; %s=1 turns them off): %s",
            fairseq.__version__,
            NO_FIXES,
            ", ".join(changed),
        )
    return changed
