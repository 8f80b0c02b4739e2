"""fairseq training logs (``--log-format json``): epoch records, and curves of several runs."""

import json


def read_fairseq_log(path):
    """Epoch-level records of a fairseq json log (its ``--log-file`` or stdout):
    ``{"train": [...], "valid": [...]}``, keys without their ``train_``/``valid_`` prefix, numbers
    as floats, one record per epoch (the last one logged for it)."""
    epochs = {"train": {}, "valid": {}}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                start = line.find('{"epoch"')
                if start < 0:
                    continue
                try:
                    record = json.loads(line[start:])
                except json.JSONDecodeError:
                    continue
                for kind in epochs:
                    prefix = kind + "_"
                    if all(key.startswith(prefix) for key in record if key != "epoch"):
                        values = {k.removeprefix(prefix): float(v) for k, v in record.items()}
                        epochs[kind][int(values["epoch"])] = values
    except OSError as e:
        raise ValueError(f"cannot read log {path}: {e.strerror}") from None
    if not epochs["train"]:
        raise ValueError(f"{path}: no epoch records (was it written with --log-format json?)")
    return {kind: [by_epoch[e] for e in sorted(by_epoch)] for kind, by_epoch in epochs.items()}


PANELS = [
    ("NLL per target token (bits)", [("train", "nll_loss", "-"), ("valid", "nll_loss", "--")]),
    ("valid loss (label-smoothed, bits)", [("valid", "loss", "--")]),
    ("valid BLEU", [("valid", "bleu", "--")]),
    ("train kl_loss (bits/token)", [("train", "kl_loss", "-")]),
]


def plot(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, series) in zip(axes.flat, PANELS):
        for index, (name, log) in enumerate(runs):
            color = f"C{index}"
            for kind, key, style in series:
                points = [(r["epoch"], r[key]) for r in log[kind] if key in r]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, color=color, marker=".", label=f"{name} {kind}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
