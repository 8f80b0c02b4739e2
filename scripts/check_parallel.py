#!/usr/bin/env python
"""Check that a folder holds a readable, UTF-8, line-aligned parallel corpus.

  check_parallel.py DIR SPLIT [SPLIT ...] --langs SRC TGT

Every ``DIR/SPLIT.LANG`` must exist, decode as UTF-8, and both languages of a split must have
the same number of lines. The first problem is reported on one line, exit status 1.
"""

import argparse
import os
import sys


def count_lines(path):
    if not os.path.isfile(path):
        raise ValueError(f"missing file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for _ in f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 ({e.reason} at byte {e.start})")


def check_parallel(folder, splits, langs):
    for split in splits:
        counts = {lang: count_lines(os.path.join(folder, f"{split}.{lang}")) for lang in langs}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{split}.{lang}: {n}" for lang, n in counts.items())
            raise ValueError(f"line counts differ in {folder} ({detail})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("splits", nargs="+")
    parser.add_argument("--langs", nargs=2, required=True, metavar=("SRC", "TGT"))
    args = parser.parse_args(argv)
    try:
        check_parallel(args.folder, args.splits, args.langs)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
