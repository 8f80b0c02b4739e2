"""UTF-8 text files read line by line and checked as parallel corpora.

Lines are split on "\\n" only, like the perl scripts of fairseq's recipes. Every problem with an
input file is a :class:`~.errors.ToolError` whose message names the file.
"""

import itertools
import os

from .errors import ToolError
from .progress import progress


def check_exists(path):
    if os.path.isdir(path):
        raise ToolError(f"{path} is a directory, not a file")
    if not os.path.isfile(path):
        raise ToolError(f"no such file: {path}")


def iter_lines(path):
    """Yield the lines of a UTF-8 file without their trailing newline."""
    check_exists(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ToolError(f"{path}: line {number} is not valid UTF-8 ({e.reason})") from None
            yield line[:-1] if line.endswith("\n") else line


def read_lines(path):
    return list(iter_lines(path))


def count_lines(path):
    """The number of lines of a UTF-8 file (which is read through, to check it)."""
    return sum(1 for _ in iter_lines(path))


def _different_line_counts(paths):
    counts = ", ".join(f"{path}: {count_lines(path)}" for path in paths)
    return ToolError(f"parallel files have different line counts ({counts})")


def count_fairseq_lines(path):
    """The number of lines of a UTF-8 file, checked to be the number fairseq reads: a carriage
    return (CR) inside a line is a line break to fairseq (Python's universal newlines), though
    not to the perl scripts; a CR before the newline (CRLF) is not."""
    count = 0
    for count, line in enumerate(progress(iter_lines(path), os.path.basename(path)), 1):
        if "\r" in (line[:-1] if line.endswith("\r") else line):
            raise ToolError(
                f"{path}: line {count} holds a carriage return (CR) that fairseq "
                "reads as a line break: remove it (e.g. tr -d '\\r')"
            )
    return count


def check_parallel(*paths):
    """Check that ``paths`` exist, are UTF-8 and have the same number of lines, as fairseq
    counts them."""
    if len({count_fairseq_lines(path) for path in paths}) > 1:
        raise _different_line_counts(paths)


def iter_parallel(*paths):
    """Yield the line tuples of parallel files, checking them as ``check_parallel`` does."""
    sentinel = object()
    for lines in itertools.zip_longest(*map(iter_lines, paths), fillvalue=sentinel):
        if sentinel in lines:
            raise _different_line_counts(paths)
        yield lines
