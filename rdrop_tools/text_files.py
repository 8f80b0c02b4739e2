"""UTF-8 text files read line by line, checked as parallel corpora, written all-or-nothing.

Lines are split on "\\n" only, like the perl scripts of fairseq's recipes. Every problem with an
input file is an ``InputError`` whose message names the file; the tools print it as one
``error: ...`` line and exit with status 1 (``exit_on_input_error``).
"""

import contextlib
import itertools
import os
import sys

from .progress import progress


class InputError(Exception):
    """A problem with an input file, reported to the user as one line."""


def check_exists(path):
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a file")
    if not os.path.isfile(path):
        raise InputError(f"no such file: {path}")


def iter_lines(path):
    """Yield the lines of a UTF-8 file without their trailing newline."""
    check_exists(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: line {number} is not valid UTF-8 ({e.reason})")
            yield line[:-1] if line.endswith("\n") else line


def read_lines(path):
    return list(iter_lines(path))


def count_lines(path):
    """The number of lines of a UTF-8 file (which is read through, to check it)."""
    return sum(1 for _ in iter_lines(path))


def _different_line_counts(paths):
    counts = ", ".join(f"{path}: {count_lines(path)}" for path in paths)
    return InputError(f"parallel files have different line counts ({counts})")


def count_fairseq_lines(path):
    """The number of lines of a UTF-8 file, checked to be the number fairseq reads: a carriage
    return (CR) inside a line is a line break to fairseq (Python's universal newlines), though
    not to the perl scripts; a CR before the newline (CRLF) is not."""
    count = 0
    for count, line in enumerate(progress(iter_lines(path), os.path.basename(path)), 1):
        if "\r" in (line[:-1] if line.endswith("\r") else line):
            raise InputError(f"{path}: line {count} holds a carriage return (CR) that fairseq "
                             "reads as a line break: remove it (e.g. tr -d '\\r')")
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


@contextlib.contextmanager
def atomic_output(*paths):
    """Open ``paths`` for writing under temporary names; rename them into place on success. On
    failure nothing is left, not even the folders created for them."""
    for path in paths:
        if os.path.isdir(path):  # the tools' one line, wherever they write
            sys.exit(f"error: {path} is a directory: name the file to write")
    parts = [f"{path}.part" for path in paths]
    files, created = [], []
    try:
        for part in parts:
            folder = os.path.dirname(os.path.abspath(part))
            while not os.path.isdir(folder):
                created.append(folder)
                folder = os.path.dirname(folder)
            os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)
            files.append(open(part, "w", encoding="utf-8"))
        yield files
    except BaseException:
        for f, part in zip(files, parts):
            f.close()
            os.remove(part)
        for folder in sorted(created, key=len, reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    for f, part, path in zip(files, parts, paths):
        f.close()
        os.replace(part, path)


@contextlib.contextmanager
def exit_on_input_error():
    """Turn an ``InputError`` into one ``error: ...`` line on stderr and exit status 1."""
    try:
        yield
    except InputError as e:
        sys.exit(f"error: {e}")
