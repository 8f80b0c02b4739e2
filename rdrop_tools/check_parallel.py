"""Check that a folder holds a readable, UTF-8, line-aligned parallel corpus.

  rdrop-check-parallel DIR SPLIT [SPLIT ...] --langs SRC TGT

Every ``DIR/SPLIT.LANG`` must exist, decode as UTF-8, and both languages of a split must have
the same number of lines, as fairseq counts them (no carriage return inside a line). The first
problem is reported on one line, exit status 1.
"""

import argparse
import os

from .errors import exit_in_one_line
from .text_files import check_parallel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("splits", nargs="+")
    parser.add_argument("--langs", nargs=2, required=True, metavar=("SRC", "TGT"))
    args = parser.parse_args(argv)
    with exit_in_one_line():
        for split in args.splits:
            check_parallel(*(os.path.join(args.folder, f"{split}.{lang}") for lang in args.langs))


if __name__ == "__main__":
    main()
