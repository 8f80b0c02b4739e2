"""One clear line, not a traceback, for mistakes the plugin can attribute to its user.

Such mistakes are raised as :class:`UsageError` (a ``ValueError``). When fairseq's command lines
import the plugin (``--user-dir``), it calls :func:`install_excepthook`: an uncaught
``UsageError`` is then printed as ``error: <message>`` with exit status 1; ``RDROP_TRACEBACK=1``
shows the traceback above it. Every other exception keeps Python's traceback. A plain ``import
rdrop_fairseq`` leaves ``sys.excepthook`` alone; the rdrop-* tools catch the errors they expect
and print their one line themselves.
"""

import os
import sys

TRACEBACK = "RDROP_TRACEBACK"


class UsageError(ValueError):
    """A mistake in the command line, the data or a checkpoint, explained in one line."""


def first_line(exc):
    """``Type: first line of the message``, for quoting an exception inside a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def show_traceback():
    """``RDROP_TRACEBACK=1``: the value ``1`` only, as ``RDROP_TRUST_CHECKPOINTS`` and
    ``RDROP_FAIRSEQ_NO_FIXES`` (unset, empty or ``0``: no traceback)."""
    return os.environ.get(TRACEBACK) == "1"


def _excepthook(exc_type, exc, tb):
    if not issubclass(exc_type, UsageError):
        sys.__excepthook__(exc_type, exc, tb)
        return
    if show_traceback():
        sys.__excepthook__(exc_type, exc, tb)
    sys.stderr.flush()
    print(f"error: {exc}", file=sys.stderr, flush=True)


def install_excepthook():
    """Print an uncaught :class:`UsageError` as one ``error:`` line (exit status 1). Leaves a hook
    someone else installed alone; idempotent. Returns whether the hook is in place."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    if _fairseq_command() == "hydra_train":
        # Hydra prints a job's exception itself, as a traceback, unless HYDRA_FULL_ERROR is set:
        # then it re-raises it, to this hook
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    return sys.excepthook is _excepthook


# fairseq's command lines, as console scripts (fairseq-train, ...) or modules (python -m
# fairseq_cli.train); a spawned distributed worker inherits its parent's sys.argv
FAIRSEQ_COMMANDS = (
    "train",
    "generate",
    "interactive",
    "validate",
    "hydra_train",
    "eval_lm",
    "score",
    "preprocess",
)


def _fairseq_command():
    """``train``, ``hydra_train``, ... when this process is one of fairseq's command lines (or a
    worker it spawned), else None."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name.startswith("fairseq_cli."):
        return spec.name[len("fairseq_cli.") :]
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    if name.endswith(".py") and os.path.basename(os.path.dirname(path)) == "fairseq_cli":
        command = name[:-3]
    elif name.startswith("fairseq-"):
        command = name[len("fairseq-") :].replace("-", "_")
    else:
        return None
    return command if command in FAIRSEQ_COMMANDS else None


def run_by_fairseq_command_line():
    """Whether this process is one of fairseq's command lines (or a worker it spawned)."""
    return _fairseq_command() is not None
