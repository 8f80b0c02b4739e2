"""One loading policy for everything fairseq unpickles from a checkpoint.

Unpickling a file can run arbitrary code, so checkpoints load with torch's safe
(``weights_only``) unpickler and an allowlist of exactly what fairseq checkpoints hold
(:data:`ALLOWED_GLOBALS`). A file holding anything else is refused with one line naming it;
``RDROP_TRUST_CHECKPOINTS=1`` loads such a file with the full unpickler, for a file the user
trusts. An unreadable checkpoint is explained in one line (missing, empty, truncated zip or
pickle, not a checkpoint).

:func:`install` routes fairseq's unpickling through :func:`load_checkpoint_file`:
``fairseq.checkpoint_utils`` (resume, ``--restore-file``, ``fairseq-generate``/``-interactive``/
``-validate``, ``load_model_ensemble_and_task``, EMA weights, ``from_pretrained`` and hub
downloads) and ``fairseq.distributed.utils`` (the loaded state that rank 0 broadcasts to the other
ranks, which also holds fairseq's omegaconf configuration: :data:`BROADCAST_GLOBALS`).
docs/reliability.md lists every path. This is apart from the fairseq bug fixes and has its own
switch: only ``RDROP_TRUST_CHECKPOINTS`` changes it.

A torch that cannot load with this allowlist (older than 2.5: no
``torch.serialization.safe_globals``; 2.5: its unpickler refuses the ``(function, name)``
entries) loads the files with the full unpickler (its own default), and the start-up line says
so, once; a checkpoint is never blamed for a missing torch API.
"""

import argparse
import collections
import functools
import inspect
import io
import logging
import os
import pickle
import re
import types
import typing
import zipfile

import numpy as np
import torch

from .compat import torch_can_load_safely
from .errors import UsageError, first_line

logger = logging.getLogger(__name__)

TRUST_CHECKPOINTS = "RDROP_TRUST_CHECKPOINTS"
MARK = "_rdrop_checkpoint_loading"

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
_NUMERIC = (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
)
ALLOWED_GLOBALS = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    *sorted({type(np.dtype(t)) for t in _NUMERIC} - {np.dtype}, key=str),
    *[
        (getattr(multiarray, name), f"{module}.{name}")
        for module in ("numpy._core.multiarray", "numpy.core.multiarray")
        for name in ("scalar", "_reconstruct")
    ],
]


def _broadcast_globals():
    """What a loaded checkpoint holds once fairseq has turned its ``cfg`` into an omegaconf
    ``DictConfig`` (``load_checkpoint_to_cpu``), as rank 0 broadcasts it: the omegaconf
    containers and nodes, their metadata (which names the types ``typing.Any``, ``dict``, ``int``,
    ``list``), and fairseq's placeholder for the tensors sent separately."""
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig, base, nodes

    return [
        DictConfig,
        ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.StringNode,
        nodes.IntegerNode,
        nodes.FloatNode,
        nodes.BooleanNode,
        collections.defaultdict,
        typing.Any,
        dict,
        int,
        float,
        str,
        bool,
        list,
        _TensorPlaceholder,
    ]


@functools.lru_cache(maxsize=None)
def safe_loading_works():
    """Whether this torch loads with an allowlist: it has the API and loads a small state like a
    checkpoint's with :data:`ALLOWED_GLOBALS` (checked once, in memory)."""
    if not torch_can_load_safely():
        return False
    buffer = io.BytesIO()
    torch.save({"args": argparse.Namespace(score=np.float64(1)), "counts": np.zeros(2)}, buffer)
    buffer.seek(0)
    try:
        _safe_load(buffer, None, (), {}, ())
    except Exception:
        return False
    return True


def trusted():
    return os.environ.get(TRUST_CHECKPOINTS) == "1"


def policy():
    """The start-up line's description of how checkpoints load."""
    if trusted():
        return f"full unpickler ({TRUST_CHECKPOINTS}=1: only for files you trust)"
    if not safe_loading_works():
        why = (
            "it has no torch.serialization.safe_globals"
            if not torch_can_load_safely()
            else "its weights_only unpickler refuses the allowlist"
        )
        return (
            f"full unpickler: torch {torch.__version__} cannot load with an allowlist "
            f"({why}; torch >= 2.6 can)"
        )
    return f"safe (weights_only with an allowlist; {TRUST_CHECKPOINTS}=1 for trusted files)"


def load_checkpoint_file(f, map_location=None, *args, extra_globals=(), **kwargs):
    """``torch.load`` under the loading policy: ``weights_only`` with :data:`ALLOWED_GLOBALS`
    (plus ``extra_globals``), or the full unpickler with ``RDROP_TRUST_CHECKPOINTS=1`` or on a torch
    that cannot load safely; a failure is one :class:`UsageError` line saying what is wrong with
    the file. ``weights_only`` given by the caller is ignored: the policy decides."""
    kwargs.pop("weights_only", None)
    if trusted() or not safe_loading_works():
        unpickle = _full_load
    else:
        unpickle = _safe_load
    try:
        return unpickle(f, map_location, args, kwargs, extra_globals)
    except Exception as e:
        if not_the_files_fault(e):
            raise
        from .resume import resumable_alternatives  # noqa: E402 (imports fairseq)

        name = getattr(f, "name", f)
        raise UsageError(unreadable_checkpoint(name, e) + resumable_alternatives(name)) from e


#: Out of memory, in the host's memory or a device's (torch's own type where it has one).
_OUT_OF_MEMORY = tuple(
    {
        MemoryError,
        getattr(torch, "OutOfMemoryError", MemoryError),
        getattr(torch.cuda, "OutOfMemoryError", MemoryError),
    }
)
#: What a RuntimeError about the device rather than the file says.
_DEVICE_ERROR = re.compile(r"\b(CUDA|cuda|cuDNN|cuBLAS|CUBLAS|NCCL|HIP|MPS|XPU|device)\b")


def not_the_files_fault(exc):
    """Whether ``exc``, raised while loading, is the machine's problem rather than the file's (out
    of memory, a CUDA or other device error): it then passes on as itself. (KeyboardInterrupt
    and other BaseExceptions are no Exception: they always do.)"""
    accelerator_error = getattr(torch, "AcceleratorError", ())  # torch >= 2.8: CUDA errors
    return (
        isinstance(exc, (*_OUT_OF_MEMORY, accelerator_error))
        or isinstance(exc, RuntimeError)
        and _DEVICE_ERROR.search(str(exc)) is not None
    )


def _full_load(f, map_location, args, kwargs, extra_globals):
    if "weights_only" in inspect.signature(torch.load).parameters:  # torch >= 1.13
        kwargs = dict(kwargs, weights_only=False)
    return torch.load(f, map_location, *args, **kwargs)


def _safe_load(f, map_location, args, kwargs, extra_globals):
    registered = torch.serialization.get_safe_globals()
    allowed = [g for g in [*ALLOWED_GLOBALS, *extra_globals] if g not in registered]
    with torch.serialization.safe_globals(allowed):
        return torch.load(f, map_location, *args, weights_only=True, **kwargs)


def unreadable_checkpoint(path, exc):
    """One line saying why ``torch.load`` could not read the checkpoint ``path`` (a file name,
    or an in-memory buffer such as a broadcast state)."""
    message = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read checkpoint {path}: {exc.strerror}"
    if not isinstance(path, (str, bytes, os.PathLike)):
        return (
            _refused(f"the checkpoint state sent by rank 0 ({type(path).__name__})", exc)
            or f"cannot read the checkpoint state sent by rank 0 ({first_line(exc)})"
        )
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
    refused = _refused(f"checkpoint {path}", exc)
    if refused:
        return refused
    if head[:1] == b"\x80" and (isinstance(exc, EOFError) or "unexpected EOF" in message):
        return f"checkpoint {path} is truncated (an incomplete pickle)"
    return f"cannot read checkpoint {path} ({first_line(exc)})"


def _refused(what, exc):
    message = str(exc)
    if not (
        isinstance(exc, pickle.UnpicklingError) and message.startswith("Weights only load failed")
    ):
        return None
    found = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", message)
    if found:
        name = found[1] or found[2]
        name = name if "." in name else f"builtins.{name}"  # torch drops the "builtins."
    else:
        reason = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        name = f"data that torch's weights_only unpickler refuses ({reason})"
    return (
        f"{what} holds {name}, which the safe loader does not allow; "
        f"if you trust this file, set {TRUST_CHECKPOINTS}=1"
    )


def _complete_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


class _PolicyTorch(types.ModuleType):
    """``torch`` as a fairseq module sees it: ``load`` is :func:`load_checkpoint_file`."""

    def __init__(self, name, extra_globals=()):
        super().__init__(name)
        self._extra_globals = extra_globals

    def __getattr__(self, name):
        return getattr(torch, name)

    def load(self, f, *args, **kwargs):
        extra = self._extra_globals() if callable(self._extra_globals) else self._extra_globals
        return load_checkpoint_file(f, *args, extra_globals=extra, **kwargs)


def installed(module):
    return getattr(module.torch, MARK, False)


def install():
    """Route fairseq's checkpoint loading and the broadcast of a loaded state through the policy
    (once); log how checkpoints load, once. Return the names of the modules changed now."""
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    changed = []
    for module, extra in ((checkpoint_utils, ()), (distributed_utils, _broadcast_globals)):
        if not installed(module):
            proxy = _PolicyTorch("torch", extra)
            setattr(proxy, MARK, True)
            module.torch = proxy
            changed.append(module.__name__)
    if changed:
        log = logger.info if trusted() or safe_loading_works() else logger.warning
        log("checkpoint loading: %s", policy())
    return changed
