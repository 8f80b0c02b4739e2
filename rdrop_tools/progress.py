"""Progress of the tools that can run for minutes: items done and the rate, on a terminal only.

When stderr is not a terminal (a log file, a pipe, a test), nothing is printed."""

import sys


def progress(iterable, desc, unit="line", total=None):
    """``iterable``, with a tqdm progress bar on stderr (tqdm's ``disable=None``: only on a
    terminal)."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        desc=desc,
        unit=f" {unit}s",
        total=total,
        unit_scale=unit == "line",
        mininterval=0.5,
        file=sys.stderr,
        disable=None,
    )


def stage(message):
    """Say on a terminal what a long step is doing now (a log stays quiet)."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)
