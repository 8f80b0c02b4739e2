"""What the plugin needs from the installed fairseq and torch, and the API differences it
bridges.

- fairseq >= 0.12.2, from any distribution that installs the module ``fairseq`` (``fairseq``,
  ``fairseq-fixed``, ``ve-fairseq``, ...): :func:`check_fairseq` fails in one line otherwise.
- fairseq 0.12.2's ``FairseqTask.build_criterion(self, cfg)`` has no ``from_checkpoint``
  argument (fairseq main has): :func:`build_criterion` calls either.
- torch older than 2.5 has no ``torch.serialization.safe_globals``/``get_safe_globals``
  (:func:`torch_can_load_safely`), and torch 2.5's refuses the allowlist's ``(function, name)``
  entries: both load checkpoints with the full unpickler, and the start-up line says so. Safe
  loading needs torch >= 2.6.
"""

import importlib
import inspect
import re

from .errors import UsageError

MIN_FAIRSEQ = (0, 12, 2)
INSTALL_FAIRSEQ = (
    "pip install 'rdrop-fairseq[fairseq]' (a new environment) or "
    "pip install fairseq-fixed (Python 3.12)"
)


class FairseqUnavailable(UsageError, ImportError):
    """fairseq is missing or too old: an ``ImportError`` for a program that imports the plugin,
    one ``error:`` line on a command line."""


def version_tuple(version):
    """(0, 12, 3) for '0.12.3', '0.12.3.1', '0.12.3+abc', '0.13.0a0'."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def check_fairseq():
    """Raise :class:`FairseqUnavailable` unless fairseq >= :data:`MIN_FAIRSEQ` is importable."""
    need = ".".join(map(str, MIN_FAIRSEQ))
    try:
        fairseq = importlib.import_module("fairseq")
    except ModuleNotFoundError as e:
        if e.name != "fairseq":
            raise  # fairseq is there but one of its own dependencies is not: its traceback says
        raise FairseqUnavailable(
            f"rdrop-fairseq needs fairseq >= {need}, which is not installed: {INSTALL_FAIRSEQ}"
        ) from None
    version = getattr(fairseq, "__version__", "0")
    if version_tuple(version) < MIN_FAIRSEQ:
        raise FairseqUnavailable(
            f"rdrop-fairseq needs fairseq >= {need}, found {version} "
            f"({getattr(fairseq, '__file__', '?')}): {INSTALL_FAIRSEQ}"
        )
    return version


def takes_from_checkpoint(build_criterion_method):
    """Whether ``build_criterion`` accepts ``from_checkpoint`` (fairseq main; not 0.12.2)."""
    try:
        parameters = inspect.signature(build_criterion_method).parameters
    except (TypeError, ValueError):
        return True
    return "from_checkpoint" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def build_criterion(parent_build_criterion, cfg, from_checkpoint=False):
    """The bound ``parent_build_criterion(cfg[, from_checkpoint])`` as the installed fairseq
    defines it."""
    if takes_from_checkpoint(parent_build_criterion):
        return parent_build_criterion(cfg, from_checkpoint=from_checkpoint)
    return parent_build_criterion(cfg)


def torch_can_load_safely():
    """Whether this torch has the allowlist API at all (torch >= 2.5; the loader also probes it)."""
    import torch

    serialization = torch.serialization
    return hasattr(serialization, "safe_globals") and hasattr(serialization, "get_safe_globals")


def unwrapped(model):
    """The model inside DDP and fairseq's other wrappers (each holds it as ``.module``)."""
    while hasattr(model, "module"):
        model = model.module
    return model
