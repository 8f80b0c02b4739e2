"""What the experiment reports quote from one training run: its json log's epoch records
summarised (epochs, updates, wall clock, throughput, best valid BLEU)."""

import os
import statistics

from rdrop_tools.training_logs import read_fairseq_log


def total_wall_s(train_records):
    """fairseq's wall clock restarts from 0 when a run is resumed: add up the segments (the
    unfinished epoch a resume replays is not counted)."""
    total = last = 0.0
    for record in train_records:
        if record["wall"] < last:
            total += last
        last = record["wall"]
    return total + last


def summarize_log(log):
    """The figures the experiment reports quote from one run's epoch records
    (``read_fairseq_log``)."""
    best = max(log["valid"], key=lambda r: r["bleu"])
    return {
        "epochs": int(log["train"][-1]["epoch"]),
        "updates": int(log["train"][-1]["num_updates"]),
        "wall_s": total_wall_s(log["train"]),
        "median_train_wps": statistics.median(r["wps"] for r in log["train"]),
        "best_valid_bleu": best["bleu"],
        "best_epoch": int(best["epoch"]),
        "final_train_kl_loss": log["train"][-1].get("kl_loss"),
    }


def summarize_run(run_dir):
    """One finished training folder (its json ``train.log`` and the options saved in ``.done``):
    ``(summary, log)``, the summary being the options and ``summarize_log``'s figures."""
    log = read_fairseq_log(os.path.join(run_dir, "train.log"))
    with open(os.path.join(run_dir, ".done")) as f:
        options = f.read().strip()
    return {"options": options, **summarize_log(log)}, log
