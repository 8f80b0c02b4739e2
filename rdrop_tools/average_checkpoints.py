"""Average the parameters of fairseq checkpoints (fairseq's scripts/average_checkpoints.py).

  average_checkpoints.py --inputs SAVE_DIR --num-epoch-checkpoints N --output FILE
  average_checkpoints.py --inputs SAVE_DIR --num-update-checkpoints N --output FILE
  average_checkpoints.py --inputs A.pt B.pt ... --output FILE

With a SAVE_DIR, the last N of its checkpointEPOCH.pt (or checkpoint_EPOCH_UPDATES.pt) files are
averaged. The output keeps everything else (config, optimizer state) of the last one.
"""

import argparse
import os
import re
import sys

import torch


def last_checkpoints(save_dir, n, by_update):
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if by_update else r"checkpoint(\d+)\.pt")
    numbered = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(save_dir)
        if (m := pattern.fullmatch(name))
    )
    if len(numbered) < n:
        kind = "update" if by_update else "epoch"
        raise ValueError(f"{save_dir}: {len(numbered)} {kind} checkpoints, {n} needed")
    return [os.path.join(save_dir, name) for _, name in numbered[-n:]]


def average_checkpoints(paths):
    """The last checkpoint's state with ``model`` replaced by the mean over ``paths``."""
    total = None
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"no such checkpoint: {path}")
        # fairseq checkpoints pickle their config: these are the user's own, trusted files
        state = torch.load(path, map_location="cpu", weights_only=False)
        params = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
        if total is None:
            total = params
        elif params.keys() != total.keys():
            raise ValueError(f"{path}: parameters differ from those of {paths[0]}")
        else:
            for k, v in params.items():
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
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    try:
        if n:
            if len(args.inputs) != 1 or not os.path.isdir(args.inputs[0]):
                parser.error("--num-*-checkpoints needs one save dir as --inputs")
            paths = last_checkpoints(args.inputs[0], n, args.num_update_checkpoints is not None)
        else:
            paths = args.inputs
        state = average_checkpoints(paths)
    except ValueError as e:
        sys.exit(f"error: {e}")
    torch.save(state, args.output + ".part")
    os.replace(args.output + ".part", args.output)
    print(f"averaged {len(paths)} checkpoints into {args.output}: {' '.join(paths)}")


if __name__ == "__main__":
    main()
