"""Checks of the data directories and the training command line, each failing in one line
(:class:`~rdrop_fairseq.errors.UsageError`) before any work, instead of a fairseq traceback
later. Called by the ``rdrop_translation`` task."""

import os

import numpy as np
from fairseq import utils
from fairseq.data import data_utils

from .errors import UsageError, first_line


def is_local(path):
    return "://" not in path


def _languages(path):
    return sorted(
        n[len("dict.") : -len(".txt")]
        for n in os.listdir(path)
        if n.startswith("dict.") and n.endswith(".txt")
    )


def _pairs(path):
    return sorted(
        {
            n.split(".")[1]
            for n in os.listdir(path)
            if n.count(".") >= 2 and n.split(".")[1].count("-") == 1
        }
    )


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
            raise UsageError(
                f"{paths[0]} holds no <split>.<src>-<tgt>.* files: "
                "give the languages with -s/--source-lang and -t/--target-lang"
            )
    for flag, lang in (("-s/--source-lang", source_lang), ("-t/--target-lang", target_lang)):
        if not os.path.isfile(os.path.join(paths[0], f"dict.{lang}.txt")):
            raise UsageError(
                f"{flag} {lang}: {paths[0]} has no dict.{lang}.txt "
                f"(its dictionaries: {', '.join(_languages(paths[0])) or 'none'})"
            )


def missing_data_error(exc, data, split, source_lang, target_lang):
    """A :class:`UsageError` explaining a ``FileNotFoundError`` from ``load_dataset(split)``."""
    where = [p for p in utils.split_paths(data) if is_local(p) and os.path.isdir(p)]
    found = "; ".join(f"{p}: {', '.join(_pairs(p)) or 'none'}" for p in where)
    return UsageError(
        f"no '{split}' data for {source_lang}-{target_lang} ({first_line(exc)}); "
        f"language pairs found: {found or 'none'}"
    )


# -- binarized splits (called before fairseq loads them) ----------------------------------------


def _sentences(prefix):
    """Sentences in fairseq's binarized ``prefix.{bin,idx}``; None where it cannot tell (another
    dataset format than fairseq-preprocess's default, or no such file)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    if not os.path.isfile(prefix + ".idx"):
        return None
    try:
        return len(MMapIndexedDataset.Index(prefix + ".idx"))
    except Exception:
        return None


def check_split(data, split, source_lang, target_lang, epoch=1, combine=False):
    """The binarized ``split`` has sentences, and as many on the target side as on the source
    side (fairseq-preprocess accepts sides of different lengths; training then fails)."""
    paths = utils.split_paths(data)
    path = paths[(epoch - 1) % len(paths)]
    if not is_local(path) or source_lang is None or target_lang is None:
        return
    total, found = 0, False
    for k in range(1000 if combine else 1):
        split_k = split + (str(k) if k > 0 else "")
        for pair in (f"{source_lang}-{target_lang}", f"{target_lang}-{source_lang}"):
            prefix = os.path.join(path, f"{split_k}.{pair}.")
            src = _sentences(prefix + source_lang)
            if src is not None:
                break
        else:
            break
        found, total = True, total + src
        tgt = _sentences(prefix + target_lang)
        if tgt is not None and tgt != src:
            raise UsageError(
                f"{prefix}{{{source_lang},{target_lang}}}: the {source_lang} side holds {src} "
                f"sentences and the {target_lang} side {tgt}; the two sides of a parallel corpus "
                "must have one line per sentence each (check the text files with "
                "rdrop-check-parallel, then run fairseq-preprocess again)"
            )
    if found and total == 0:
        raise UsageError(
            f"the '{split}' split in {path} holds no sentences "
            f"({split}.{source_lang}-{target_lang}.* is empty): run "
            "fairseq-preprocess on non-empty text"
        )


def check_max_tokens(dataset, split, max_tokens, max_positions, ignore_invalid_inputs):
    """Some sentence of ``split`` fits in ``--max-tokens``, and none that fairseq keeps is longer
    (fairseq skips such training sentences with a warning, then fails when none is left; for
    validation its batching asserts)."""
    if not max_tokens or not hasattr(dataset, "num_tokens_vec") or len(dataset) == 0:
        return
    indices = np.arange(len(dataset), dtype=np.int64)
    if max_positions is not None and ignore_invalid_inputs:
        indices, _ = dataset.filter_indices_by_size(indices, max_positions)
    flag = "--max-tokens" if split == "train" else "--max-tokens-valid (default: --max-tokens)"
    if len(indices) == 0:
        shortest = int(dataset.num_tokens_vec(np.arange(len(dataset), dtype=np.int64)).min())
        if shortest > max_tokens:
            raise UsageError(
                f"no sentence of '{split}' fits in {flag} {max_tokens}: the shortest "
                f"has {shortest} tokens; raise it to at least {shortest}"
            )
        raise UsageError(
            f"no sentence of '{split}' fits the model's maximum lengths "
            f"{max_positions} (--max-source-positions, --max-target-positions)"
        )
    tokens = dataset.num_tokens_vec(np.asarray(indices, dtype=np.int64))
    longest = int(tokens.max())
    if longest > max_tokens:
        raise UsageError(
            f"sentence {int(indices[int(tokens.argmax())])} of '{split}' has {longest} tokens, "
            f"more than {flag} {max_tokens}: raise it to at least {longest} "
            "(--skip-invalid-size-inputs-valid-test skips only sentences longer than "
            "--max-source-positions/--max-target-positions, not these)"
        )
