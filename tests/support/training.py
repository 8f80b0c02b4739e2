"""``fairseq-train`` runs of the tiny Transformer with the plugin, and what tests read back from
them: the logged loss curve, the process output, the last checkpoint."""

import re

from fairseq import checkpoint_utils

from . import USER_DIR
from .tiny_model import TINY_TRANSFORMER


def train_args(data, save_dir, max_update, *extra, alpha="5", cpu=True):
    """fairseq-train's arguments: R-Drop (α ``alpha``) on ``data``, Adam, a fixed seed, a log
    line per update (simple format), only ``checkpoint_last.pt`` and ``checkpoint_best.pt``."""
    return [
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "--criterion",
        "label_smoothed_cross_entropy_rdrop",
        "--rdrop-alpha",
        alpha,
        "--label-smoothing",
        "0.1",
        "-s",
        "de",
        "-t",
        "en",
        *TINY_TRANSFORMER,
        "--optimizer",
        "adam",
        "--lr",
        "3e-3",
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        "4",
        "--clip-norm",
        "1",
        "--max-tokens",
        "2000",
        "--max-update",
        str(max_update),
        "--seed",
        "3",
        "--num-workers",
        "0",
        "--save-dir",
        save_dir,
        "--no-epoch-checkpoints",
        "--log-format",
        "simple",
        "--log-interval",
        "1",
        "--no-progress-bar",
        *(["--cpu"] if cpu else []),
        *extra,
    ]


INNER = re.compile(
    r"train_inner \| epoch (\d+):.*? loss=([^,\s]+), nll_loss=([^,\s]+), "
    r"kl_loss=([^,\s]+),.*?num_updates=(\d+)"
)


def curve(log):
    """{update: (epoch, loss, nll_loss, kl_loss)} from the train_inner lines, as logged."""
    return {int(m[5]): (int(m[1]), m[2], m[3], m[4]) for m in INNER.finditer(log)}


def output(proc):
    """All a finished process printed."""
    return proc.stdout + proc.stderr


def last_state(save_dir):
    """``checkpoint_last.pt`` of ``save_dir``, read by fairseq (through the plugin's loader)."""
    return checkpoint_utils.load_checkpoint_to_cpu(str(save_dir / "checkpoint_last.pt"))
