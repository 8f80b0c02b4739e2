"""A stand-in for code hidden in a checkpoint: unpickling :class:`RunsCode` creates a file."""

#: How pickle names the builtin open (io.open on Python 3.11, _io.open on 3.12).
OPEN = f"{open.__module__}.{open.__qualname__}"


class RunsCode:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")
