"""Plot fairseq training logs (``--log-format json``) of several runs on the same axes.

  rdrop-plot-logs --run NAME=LOG [--run NAME=LOG ...] --out FIGURE.png

LOG is the ``--log-file`` (or captured stdout) of ``fairseq-train --log-format json``. Panels,
per epoch: training and validation NLL per target token (comparable across criteria: R-Drop's
``nll_loss`` is per token of one copy), validation label-smoothed loss, validation BLEU (with
``--eval-bleu``), and R-Drop's ``kl_loss``.
"""

import argparse
import sys

from .errors import ToolError, exit_in_one_line
from .training_logs import plot, read_fairseq_log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=LOG")
    parser.add_argument("--out", required=True, help="figure file (.png)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("error: rdrop-plot-logs needs matplotlib: pip install 'rdrop-fairseq[plot]'")
    runs = []
    with exit_in_one_line(ValueError):  # a log that cannot be read
        for spec in args.run:
            name, sep, path = spec.partition("=")
            if not sep:
                raise ToolError(f"--run {spec}: expected NAME=LOG")
            runs.append((name, read_fairseq_log(path)))
    plot(runs, args.out)


if __name__ == "__main__":
    main()
