"""``fairseq-train`` runs of the tiny Transformer with the plugin, and what tests read back from
them: the logged loss curve, the process output, the last checkpoint."""

import contextlib
import re
from unittest import mock

import numpy as np
import torch
from fairseq import checkpoint_utils

from rdrop_fairseq import fairseq_fixes

from . import USER_DIR
from .tiny_model import TINY_TRANSFORMER


def train_args(data, save_dir, max_update, *extra, alpha="5", cpu=True):
    """fairseq-train's arguments: R-Drop (α ``alpha``) on ``data``, Adam, a fixed seed, a log
    line per update (simple format), only ``checkpoint_last.pt`` and ``checkpoint_best.pt``."""
    return [
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "--criterion",
        "label_smoothed_cross_entropy_rdrop",
        "--rdrop-alpha",
        alpha,
        "--label-smoothing",
        "0.1",
        "-s",
        "de",
        "-t",
        "en",
        *TINY_TRANSFORMER,
        "--optimizer",
        "adam",
        "--lr",
        "3e-3",
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        "4",
        "--clip-norm",
        "1",
        "--max-tokens",
        "2000",
        "--max-update",
        str(max_update),
        "--seed",
        "3",
        "--num-workers",
        "0",
        "--save-dir",
        save_dir,
        "--no-epoch-checkpoints",
        "--log-format",
        "simple",
        "--log-interval",
        "1",
        "--no-progress-bar",
        *(["--cpu"] if cpu else []),
        *extra,
    ]


INNER = re.compile(
    r"train_inner \| epoch (\d+):.*? loss=([^,\s]+), nll_loss=([^,\s]+), "
    r"kl_loss=([^,\s]+),.*?num_updates=(\d+)"
)


def curve(log):
    """{update: (epoch, loss, nll_loss, kl_loss)} from the train_inner lines, as logged."""
    return {int(m[5]): (int(m[1]), m[2], m[3], m[4]) for m in INNER.finditer(log)}


def output(proc):
    """All a finished process printed."""
    return proc.stdout + proc.stderr


def last_state(save_dir):
    """``checkpoint_last.pt`` of ``save_dir``, read by fairseq (through the plugin's loader)."""
    return checkpoint_utils.load_checkpoint_to_cpu(str(save_dir / "checkpoint_last.pt"))


class Run:
    """What an in-process :func:`fairseq_train` printed and logged (``output``), and the
    :class:`~rdrop_fairseq.errors.UsageError` or ``SystemExit`` it ended with (``error``)."""

    def __init__(self, output, error):
        self.output, self.error = output, error


def fairseq_command(command, *args):
    """fairseq-``command``'s ``cli_main`` (generate, validate) in this process, on ``args``: a
    :class:`Run` with what it printed and the :class:`UsageError` it ended with (else None), as
    :func:`fairseq_train`."""
    import contextlib
    import importlib
    import io
    import logging
    import sys
    from unittest import mock

    from rdrop_fairseq.errors import UsageError

    module = importlib.import_module(f"fairseq_cli.{command}")
    text, error = io.StringIO(), None
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # fairseq-validate resets the logging
    argv = [f"fairseq-{command}", *[str(a) for a in args]]
    try:
        with (
            mock.patch.object(sys, "argv", argv),
            contextlib.redirect_stdout(text),
            contextlib.redirect_stderr(text),
        ):
            module.cli_main()
    except UsageError as e:
        error = e
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return Run(text.getvalue(), error)


def fairseq_train(*args):
    """fairseq-train's ``cli_main`` in this process, on ``args``: what the command line runs, less
    starting Python and importing torch and fairseq again (seconds a run). A ``UsageError`` or
    ``SystemExit`` is returned in :class:`Run`, as the command line would end on it; any other
    exception propagates. The error hook and exit statuses need the real command line: the tests
    of those run it (``run_cli``)."""
    import contextlib
    import io
    import logging
    import os
    import signal
    import sys
    from unittest import mock

    import torch
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    from rdrop_fairseq import checkpoint_saving, fairseq_fixes
    from rdrop_fairseq.errors import UsageError

    fairseq_fixes.apply()  # those on fairseq_cli.train, now imported
    # what a new process starts without: fairseq's best score so far, the early-stop counter,
    # the plugin's stop-signal handlers; and one thread, as run_cli's processes
    for f, name in (
        (checkpoint_utils.save_checkpoint, "best"),
        (train.should_stop_early, "best"),
        (train.should_stop_early, "num_runs"),
    ):
        if hasattr(f, name):
            delattr(f, name)
    checkpoint_saving._saved_at = checkpoint_saving._signal = None
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(name)s | %(message)s"))
    root = logging.getLogger()
    level, error = root.level, None
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    argv = ["fairseq-train", *[str(a) for a in args]]
    try:
        with (
            mock.patch.object(sys, "argv", argv),
            contextlib.redirect_stdout(text),
            contextlib.redirect_stderr(text),
        ):
            train.cli_main()
    except (UsageError, SystemExit) as e:
        error = e
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)
        save_dir = args[args.index("--save-dir") + 1] if "--save-dir" in args else "checkpoints"
        lock = os.path.join(str(save_dir), checkpoint_saving.LOCK)  # as the process's exit would
        if checkpoint_saving._read_lock(lock).get("pid") == os.getpid():
            os.remove(lock)
    return Run(text.getvalue(), error)


@contextlib.contextmanager
def as_in_a_new_process():
    """What a new fairseq-train process starts with, for a run in this one, and this process's
    state back afterwards: one CPU thread (as the processes' OMP_NUM_THREADS=1), no best
    validation score of an earlier run (fairseq keeps it on ``checkpoint_utils.save_checkpoint``),
    none of the plugin's log-once lines logged yet, and torch's and numpy's global RNGs as they
    were (fairseq seeds them)."""
    threads, torch_rng, numpy_rng = (
        torch.get_num_threads(),
        torch.get_rng_state(),
        np.random.get_state(),
    )
    saved = vars(checkpoint_utils.save_checkpoint)
    had_best, best = "best" in saved, saved.pop("best", None)
    with mock.patch.object(fairseq_fixes, "_logged", set()):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.set_rng_state(torch_rng)
            np.random.set_state(numpy_rng)
            saved.pop("best", None)
            if had_best:
                saved["best"] = best
