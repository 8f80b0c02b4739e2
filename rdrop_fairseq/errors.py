"""One clear line, not a traceback, for mistakes the plugin can attribute to its user.

Such mistakes are raised as :class:`UsageError` (a ``ValueError``). Once this module is imported
(``--user-dir`` imports it with the plugin), an uncaught ``UsageError`` is printed as
``error: <message>`` with exit status 1; ``RDROP_TRACEBACK=1`` shows the traceback as well. Every
other exception keeps Python's traceback.
"""

import os
import sys

from fairseq import utils
from fairseq.data import data_utils


class UsageError(ValueError):
    """A mistake in the command line, the data or a checkpoint, explained in one line."""


def first_line(exc):
    """``Type: first line of the message``, for quoting an exception inside a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _excepthook(exc_type, exc, tb):
    if issubclass(exc_type, UsageError) and not os.environ.get("RDROP_TRACEBACK"):
        sys.stderr.flush()
        print(f"error: {exc}", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(exc_type, exc, tb)


if sys.excepthook is sys.__excepthook__:  # leave a hook someone else installed alone
    sys.excepthook = _excepthook


# -- data directories (called by the rdrop_translation task) ------------------------------------


def is_local(path):
    return "://" not in path


def _languages(path):
    return sorted(n[len("dict."):-len(".txt")] for n in os.listdir(path)
                  if n.startswith("dict.") and n.endswith(".txt"))


def _pairs(path):
    return sorted({n.split(".")[1] for n in os.listdir(path)
                   if n.count(".") >= 2 and n.split(".")[1].count("-") == 1})


def check_dictionaries(data, source_lang, target_lang):
    """Every data directory exists and the first holds ``dict.{src,tgt}.txt`` (what the
    translation task's ``setup_task`` reads)."""
    if not data:
        return  # fairseq reports it
    paths = utils.split_paths(data)
    for path in filter(is_local, paths):
        if not os.path.isdir(path):
            raise UsageError(f"data directory {path} does not exist")
    if not paths or not is_local(paths[0]):
        return
    if source_lang is None or target_lang is None:
        source_lang, target_lang = data_utils.infer_language_pair(paths[0])
        if source_lang is None:
            raise UsageError(f"{paths[0]} holds no <split>.<src>-<tgt>.* files: "
                             "give the languages with -s/--source-lang and -t/--target-lang")
    for flag, lang in (("-s/--source-lang", source_lang), ("-t/--target-lang", target_lang)):
        if not os.path.isfile(os.path.join(paths[0], f"dict.{lang}.txt")):
            raise UsageError(
                f"{flag} {lang}: {paths[0]} has no dict.{lang}.txt "
                f"(its dictionaries: {', '.join(_languages(paths[0])) or 'none'})")


def missing_data_error(exc, data, split, source_lang, target_lang):
    """A :class:`UsageError` explaining a ``FileNotFoundError`` from ``load_dataset(split)``."""
    where = [p for p in utils.split_paths(data) if is_local(p) and os.path.isdir(p)]
    found = "; ".join(f"{p}: {', '.join(_pairs(p)) or 'none'}" for p in where)
    return UsageError(f"no '{split}' data for {source_lang}-{target_lang} ({first_line(exc)}); "
                      f"language pairs found: {found or 'none'}")
