"""The rdrop-* tools' errors: one class, printed as one ``error: ...`` line with exit status 1."""

import contextlib
import sys


class ToolError(ValueError):
    """A problem with a tool's input, output or options, said in one line naming the file."""


@contextlib.contextmanager
def exit_in_one_line(*also):
    """Turn a :class:`ToolError` (and exceptions of the types ``also``) into one ``error: ...``
    line on stderr and exit status 1."""
    try:
        yield
    except (ToolError, *also) as e:
        sys.exit(f"error: {e}")
