"""The Moses text pipeline of fairseq's prepare-iwslt14.sh and prepare-wmt14en2de.sh, in Python.

  rdrop-text-pipeline extract --format {tags,xml} [--keep-apostrophes] IN OUT
  rdrop-text-pipeline tokenize --lang L [--aggressive-dash] [--normalize] [--lowercase] IN OUT
  rdrop-text-pipeline clean --ratio R --min-len N --max-len M PREFIX L1 L2 OUT_PREFIX
  rdrop-text-pipeline split --every N PREFIX L1 L2 TRAIN_PREFIX VALID_PREFIX

Inputs are read as UTF-8 and split on "\\n" only, like the perl scripts. Outputs appear only when
complete; on a terminal, each command shows the lines done and the rate. Bad input (missing
file, invalid UTF-8, parallel files of different lengths) is reported on one line naming the
file, with exit status 1.
"""

import argparse
import multiprocessing
import os
import re

import regex
import sacremoses

from .errors import exit_in_one_line
from .moses import MosesTokenizer
from .output_files import atomic_output
from .progress import progress
from .text_files import iter_lines, iter_parallel

# -- extraction: the grep/sed steps of prepare-iwslt14.sh ------------------------------------------

TAG_LINES_DROPPED = ("<url>", "<talkid>", "<keywords>")
TAGS_STRIPPED = re.compile(r"</?(?:title|description)>")
SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*', re.ASCII)
SEG_CLOSE = re.compile(r"\s*</seg>\s*", re.ASCII)


def extract_tags(lines):
    """IWSLT train.tags files: drop url/talkid/keywords lines, strip title/description tags."""
    for line in lines:
        if not any(tag in line for tag in TAG_LINES_DROPPED):
            yield TAGS_STRIPPED.sub("", line)


def extract_xml(lines, straight_apostrophes=True):
    """IWSLT XML / WMT SGML: the text of each ``<seg id`` line; XML entities stay escaped."""
    for line in lines:
        if "<seg id" in line:
            line = SEG_CLOSE.sub("", SEG_OPEN.sub("", line))
            yield line.replace("\u2019", "'") if straight_apostrophes else line


# -- tokenization: normalize-punctuation, remove-non-printing-char, tokenizer.perl, lowercase -----


class Tokenizer:
    """One line in, one Moses-tokenized (XML-escaped) line out."""

    def __init__(self, lang, aggressive_dash=False, normalize=False, lowercase=False):
        self.moses = MosesTokenizer(lang)
        self.normalizer = sacremoses.MosesPunctNormalizer(lang) if normalize else None
        self.aggressive_dash = aggressive_dash
        self.lowercase = lowercase

    def __call__(self, line):
        if self.normalizer is not None:
            line = regex.sub(r"\p{C}", " ", self.normalizer.normalize(line))
        line = self.moses.tokenize(
            line, aggressive_dash_splits=self.aggressive_dash, return_str=True
        )
        return line.lower() if self.lowercase else line


_worker_tokenizer = None


def _init_worker(kwargs):
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer(**kwargs)


def _tokenize_in_worker(line):
    return _worker_tokenizer(line)


def tokenize_lines(lines, workers=1, **kwargs):
    """Tokenize an iterable of lines, in order, with ``workers`` processes."""
    if workers <= 1:
        yield from map(Tokenizer(**kwargs), lines)
        return
    with multiprocessing.Pool(workers, _init_worker, (kwargs,)) as pool:
        yield from pool.imap(_tokenize_in_worker, lines, chunksize=256)


# -- corpus filtering and splitting: clean-corpus-n.perl and the awk NR%23 split -----------------


def clean_pairs(pairs, ratio, min_len, max_len, max_word_length=1000):
    """clean-corpus-n.perl: squeeze whitespace; keep pairs whose word counts lie in
    [min_len, max_len] with a length ratio of at most ``ratio`` and no overlong word."""
    for src, tgt in pairs:
        src, tgt = " ".join(src.split()), " ".join(tgt.split())
        if not src or not tgt:
            continue
        ns, nt = src.count(" ") + 1, tgt.count(" ") + 1
        if not (min_len <= ns <= max_len and min_len <= nt <= max_len):
            continue
        if ns / nt > ratio or nt / ns > ratio:
            continue
        if max(map(len, src.split() + tgt.split())) > max_word_length:
            continue
        yield src, tgt


def split_every(pairs, every):
    """Yield ``(is_valid, pair)``: every ``every``-th pair (1-based) goes to valid."""
    for number, pair in enumerate(pairs, 1):
        yield number % every == 0, pair


# -- command line ----------------------------------------------------------------------------------


def cmd_extract(args):
    lines = progress(iter_lines(args.input), f"extract {os.path.basename(args.input)}")
    if args.format == "tags":
        lines = extract_tags(lines)
    else:
        lines = extract_xml(lines, straight_apostrophes=not args.keep_apostrophes)
    with atomic_output(args.output) as (out,):
        for line in lines:
            out.write(line + "\n")


def cmd_tokenize(args):
    lines = tokenize_lines(
        progress(iter_lines(args.input), f"tokenize {os.path.basename(args.input)}"),
        workers=args.workers,
        lang=args.lang,
        aggressive_dash=args.aggressive_dash,
        normalize=args.normalize,
        lowercase=args.lowercase,
    )
    with atomic_output(args.output) as (out,):
        for line in lines:
            out.write(line + "\n")


def cmd_clean(args):
    pairs = progress(
        iter_parallel(f"{args.prefix}.{args.l1}", f"{args.prefix}.{args.l2}"),
        f"clean {os.path.basename(args.prefix)}",
    )
    kept = clean_pairs(pairs, args.ratio, args.min_len, args.max_len)
    with atomic_output(f"{args.out_prefix}.{args.l1}", f"{args.out_prefix}.{args.l2}") as outs:
        for src, tgt in kept:
            outs[0].write(src + "\n")
            outs[1].write(tgt + "\n")


def cmd_split(args):
    pairs = progress(
        iter_parallel(f"{args.prefix}.{args.l1}", f"{args.prefix}.{args.l2}"),
        f"split {os.path.basename(args.prefix)}",
    )
    paths = [
        f"{prefix}.{lang}"
        for prefix in (args.train_prefix, args.valid_prefix)
        for lang in (args.l1, args.l2)
    ]
    with atomic_output(*paths) as (train1, train2, valid1, valid2):
        for is_valid, (src, tgt) in split_every(pairs, args.every):
            (valid1 if is_valid else train1).write(src + "\n")
            (valid2 if is_valid else train2).write(tgt + "\n")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("extract", help="text lines of IWSLT train.tags or XML/SGML files")
    p.add_argument("--format", choices=["tags", "xml"], required=True)
    p.add_argument(
        "--keep-apostrophes",
        action="store_true",
        help="xml: keep U+2019 (fairseq replaces it with ')",
    )
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_extract)

    p = commands.add_parser("tokenize", help="Moses-tokenize (tokenizer.perl -l LANG)")
    p.add_argument("--lang", required=True)
    p.add_argument("--aggressive-dash", action="store_true", help="tokenizer.perl -a")
    p.add_argument(
        "--normalize",
        action="store_true",
        help="normalize-punctuation.perl and remove-non-printing-char.perl first",
    )
    p.add_argument("--lowercase", action="store_true", help="lowercase.perl afterwards")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_tokenize)

    p = commands.add_parser("clean", help="clean-corpus-n.perl -ratio R PREFIX L1 L2 OUT MIN MAX")
    p.add_argument("--ratio", type=float, default=9.0)
    p.add_argument("--min-len", type=int, required=True)
    p.add_argument("--max-len", type=int, required=True)
    for name in ("prefix", "l1", "l2", "out_prefix"):
        p.add_argument(name)
    p.set_defaults(func=cmd_clean)

    p = commands.add_parser("split", help="every N-th line pair to valid, the rest to train")
    p.add_argument("--every", type=int, required=True)
    for name in ("prefix", "l1", "l2", "train_prefix", "valid_prefix"):
        p.add_argument(name)
    p.set_defaults(func=cmd_split)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with exit_in_one_line():
        args.func(args)


if __name__ == "__main__":
    main()
