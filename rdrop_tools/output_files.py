"""A tool's output files: never one of its inputs, written whole or not at all."""

import contextlib
import os
import tempfile

from .errors import ToolError


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (by real path, or a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def output_problem(output, inputs):
    """Why ``output`` cannot be written, in one line, or None: its folder must exist, and it
    must be neither a folder nor one of ``inputs``."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        return f"{output}: directory {folder} does not exist"
    if os.path.isdir(output):
        return f"{output} is a directory: name the file to write"
    for path in inputs:
        if same_file(path, output):
            return f"{output} is the input {path}: write the output to another file"
    return None


def temporary_beside(output):
    """A new empty file (fd, path) in ``output``'s folder, to be renamed into place."""
    return tempfile.mkstemp(
        prefix=os.path.basename(output) + ".", dir=os.path.dirname(os.path.abspath(output))
    )


def set_default_permissions(path, mode=0o666):
    """``mode`` less the umask, as ``open`` would have created the file (mkstemp makes 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def write_atomically(output, write):
    """Call ``write(f)`` on a binary file beside ``output``, then rename it into place; on any
    failure nothing is left."""
    fd, part = temporary_beside(output)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        set_default_permissions(part)
        os.replace(part, output)
    except BaseException:
        os.remove(part)
        raise


@contextlib.contextmanager
def atomic_output(*paths):
    """Open ``paths`` for writing under temporary names; rename them into place on success. On
    failure nothing is left, not even the folders created for them."""
    for path in paths:
        if os.path.isdir(path):
            raise ToolError(f"{path} is a directory: name the file to write")
    files, parts, created = [], [], []
    try:
        for path in paths:
            folder = os.path.dirname(os.path.abspath(path))
            while not os.path.isdir(folder):
                created.append(folder)
                folder = os.path.dirname(folder)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd, part = temporary_beside(path)
            parts.append(part)
            files.append(open(fd, "w", encoding="utf-8"))
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
        set_default_permissions(part)
        os.replace(part, path)
