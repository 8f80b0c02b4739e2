"""Two data faults fairseq reports with a traceback, as one :class:`~.errors.UsageError` line:

- a symbol listed twice in a ``dict.*.txt`` (fairseq: ``RuntimeError: Duplicate word found when
  loading Dictionary``): the file, the symbol and its two lines;
- a validation/test sentence longer than the model takes (fairseq: ``Exception: Size of sample #N
  is invalid``): the split, how many, the limits, and what helps.
"""

import functools

from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask

from .errors import UsageError

DUPLICATE = "Duplicate word found when loading Dictionary"
TOO_LONG = "Size of sample #"


def _duplicate(path):
    """(symbol, first line, second line) of the first symbol ``path`` lists twice, else None."""
    seen = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").rsplit(" ", 1)
            flags = fields[0].rsplit(" ", 1) if len(fields) == 2 else []
            if len(flags) == 2 and flags[1].startswith("#fairseq:"):
                if flags[1] == "#fairseq:overwrite":
                    continue
                fields[0] = flags[0]
            if fields[0] in seen:
                return fields[0], seen[fields[0]], number
            seen[fields[0]] = number
    return None


def _duplicate_symbol_in_one_line(add_from_file):
    @functools.wraps(add_from_file)
    def wrapper(self, f):
        try:
            return add_from_file(self, f)
        except RuntimeError as e:
            if not (isinstance(f, str) and str(e).startswith(DUPLICATE)):
                raise
            found = _duplicate(f)
            where = (
                f"the symbol {found[0]!r} is on lines {found[1]} and {found[2]}"
                if found
                else str(e).split(". ")[0]
            )
            raise UsageError(
                f"dictionary {f}: {where}; every symbol must appear once: remove the second line "
                "(and binarize the data again with fairseq-preprocess if it used this "
                "dictionary), or mark it with #fairseq:overwrite"
            ) from e

    return wrapper


def _too_long_in_one_line(filter_indices_by_size):
    @functools.wraps(filter_indices_by_size)
    def wrapper(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        try:
            return filter_indices_by_size(
                self, indices, dataset, max_positions, ignore_invalid_inputs
            )
        except Exception as e:
            if not str(e).startswith(TOO_LONG) or ignore_invalid_inputs:
                raise
            split = next(
                (name for name, d in getattr(self, "datasets", {}).items() if d is dataset), "data"
            )
            _, ignored = dataset.filter_indices_by_size(indices, max_positions)
            first = int(ignored[0])
            raise UsageError(
                f"{len(ignored)} sentences of '{split}' are longer than the model takes "
                f"(sentence {first}: {tuple(int(n) for n in dataset.size(first))} tokens, "
                f"limits {max_positions}: --max-source-positions, --max-target-positions): "
                "--skip-invalid-size-inputs-valid-test leaves them out (not validated, not "
                "translated: scores then cover the other sentences), or train the model with "
                "larger --max-source-positions/--max-target-positions"
            ) from e

    return wrapper


def fixes():
    """(owner, attribute, wrapper factory, name) of each change this module makes."""
    return [
        (
            Dictionary,
            "add_from_file",
            _duplicate_symbol_in_one_line,
            "duplicate dictionary symbol in one line",
        ),
        (
            FairseqTask,
            "filter_indices_by_size",
            _too_long_in_one_line,
            "too long valid/test sentences in one line",
        ),
    ]
