"""Average the parameters of fairseq checkpoints (fairseq's scripts/average_checkpoints.py).

  rdrop-average-checkpoints --inputs SAVE_DIR --num-epoch-checkpoints N --output FILE
  rdrop-average-checkpoints --inputs SAVE_DIR --num-update-checkpoints N --output FILE
  rdrop-average-checkpoints --inputs A.pt B.pt ... --output FILE

With a SAVE_DIR, the last N of its checkpointEPOCH.pt (or checkpoint_EPOCH_UPDATES.pt) files are
averaged. The output keeps everything else (config, optimizer state) of the last one. The
checkpoints load as training loads them (torch's safe unpickler; ``RDROP_TRUST_CHECKPOINTS=1``
for files you trust); FILE is written only when all of them are read and averaged, never over
one of them.
"""

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping

import torch

from .errors import ToolError, exit_in_one_line
from .output_files import output_problem, write_atomically
from .progress import progress


def last_checkpoints(save_dir, n, by_update):
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if by_update else r"checkpoint(\d+)\.pt")
    numbered = sorted(
        (int(m.group(1)), name) for name in os.listdir(save_dir) if (m := pattern.fullmatch(name))
    )
    if len(numbered) < n:
        kind = "update" if by_update else "epoch"
        raise ToolError(f"{save_dir}: {len(numbered)} {kind} checkpoints, {n} needed")
    return [os.path.join(save_dir, name) for _, name in numbered[-n:]]


def load(path):
    """A checkpoint's state, loaded under the plugin's loading policy."""
    from rdrop_fairseq.checkpoint_loading import load_checkpoint_file

    if os.path.isdir(path):
        raise ToolError(
            f"{path} is a directory, not a checkpoint (a save dir needs "
            "--num-epoch-checkpoints or --num-update-checkpoints)"
        )
    if not os.path.isfile(path):
        raise ToolError(f"no such checkpoint: {path}")
    state = load_checkpoint_file(path, map_location="cpu")  # a UsageError (ValueError) says why
    if (
        not isinstance(state, Mapping)
        or not isinstance(state.get("model"), Mapping)
        or not all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise ToolError(f"{path} is not a fairseq checkpoint (no model parameters)")
    return state


def average_checkpoints(paths):
    """The last checkpoint's state with ``model`` replaced by the mean over ``paths``."""
    total = None
    for path in progress(paths, desc="averaging", unit="checkpoint"):
        state = load(path)
        params = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
        if total is None:
            total = params
            continue
        if params.keys() != total.keys():
            raise ToolError(
                f"{path}: parameters differ from those of {paths[0]} (not the same model)"
            )
        for k, v in params.items():
            if v.shape != total[k].shape:
                raise ToolError(
                    f"{path}: {k} has shape {tuple(v.shape)}, {paths[0]} "
                    f"{tuple(total[k].shape)} (another dictionary or model size)"
                )
            total[k] = total[k] + v
    state["model"] = {
        k: v / len(paths) if v.is_floating_point() else v // len(paths) for k, v in total.items()
    }
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", nargs="+", required=True, help="checkpoints, or one save dir")
    parser.add_argument("--output", required=True)
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--num-epoch-checkpoints", type=int)
    count.add_argument("--num-update-checkpoints", type=int)
    args = parser.parse_args(argv)
    # before fairseq is imported: one of its modules sets the root logger to INFO on import
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    for flag, value in (
        ("--num-epoch-checkpoints", args.num_epoch_checkpoints),
        ("--num-update-checkpoints", args.num_update_checkpoints),
    ):
        if value is not None and value < 1:
            sys.exit(f"error: {flag} must be at least 1, got {value}")
    with exit_in_one_line(ValueError, OSError):  # the loader's UsageError, a full disk
        if n:
            if len(args.inputs) != 1 or not os.path.isdir(args.inputs[0]):
                parser.error("--num-*-checkpoints needs one save dir as --inputs")
            paths = last_checkpoints(args.inputs[0], n, args.num_update_checkpoints is not None)
        else:
            paths = args.inputs
        problem = output_problem(args.output, paths)
        if problem:
            raise ToolError(f"--output {problem}")
        state = average_checkpoints(paths)
        write_atomically(args.output, lambda f: torch.save(state, f))
    print(f"averaged {len(paths)} checkpoints into {args.output}: {' '.join(paths)}")


if __name__ == "__main__":
    main()
