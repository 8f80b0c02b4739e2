#!/usr/bin/env python
"""Collect the Multi30k baseline-vs-R-Drop experiment (examples/translation/experiment-multi30k.sh)
into results.json, the test hypotheses, curves.png and a markdown table.

  multi30k_report.py --work WORK_DIR --out RESULTS_DIR
"""

import argparse
import json
import os
import platform
import shutil
import sys

import torch

from plot_logs import plot, read_fairseq_log

MAIN = {"baseline": "baseline-d0.3", "rdrop": "rdrop-a5-d0.3"}
SWEEP_EPOCH = 5


def summarize_run(run_dir):
    log = read_fairseq_log(os.path.join(run_dir, "train.log"))
    valid = log["valid"]
    best = max(valid, key=lambda r: r["bleu"])
    at_sweep_epoch = [r["bleu"] for r in valid if r["epoch"] == SWEEP_EPOCH]
    with open(os.path.join(run_dir, ".done")) as f:
        options = f.read().strip()
    return {
        "options": options,
        "epochs": int(log["train"][-1]["epoch"]),
        "updates": int(log["train"][-1]["num_updates"]),
        "train_wall_s": log["train"][-1]["train_wall"],
        "wall_s": log["train"][-1]["wall"],
        "best_valid_bleu": best["bleu"],
        "best_epoch": int(best["epoch"]),
        f"valid_bleu_epoch{SWEEP_EPOCH}": at_sweep_epoch[0] if at_sweep_epoch else None,
        "final_train_kl_loss": log["train"][-1].get("kl_loss"),
    }, log


def markdown(results):
    b, r = results["baseline"], results["rdrop"]
    rows = [
        "| system | test2016 BLEU | chrF | best valid BLEU (epoch) | updates | train wall |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("baseline (label_smoothed_cross_entropy)", b), ("R-Drop (α 5)", r)):
        rows.append(
            f"| {name} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['best_valid_bleu']:.2f} "
            f"({s['best_epoch']}) | {s['updates']} | {s['train_wall_s'] / 60:.0f} min |"
        )
    rows += [
        "",
        f"R-Drop − baseline: {r['bleu'] - b['bleu']:+.2f} BLEU, {r['chrf'] - b['chrf']:+.2f} chrF; "
        f"paired bootstrap p = {results['p_value']:.4f} ({results['signature']})",
        "",
        f"| sweep run | options | valid BLEU at epoch {SWEEP_EPOCH} |",
        "|---|---|---|",
    ]
    for name, s in results["sweep"].items():
        rows.append(f"| {name} | `{s['options']}` | {s[f'valid_bleu_epoch{SWEEP_EPOCH}']:.2f} |")
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        results, logs = {}, []
        for system, run in MAIN.items():
            summary, log = summarize_run(os.path.join(args.work, run))
            with open(os.path.join(args.work, f"{system}.test2016.json")) as f:
                test = json.load(f)
            summary.update({k: test[k] for k in ("bleu", "chrf", "n")})
            results[system] = summary
            logs.append((system, log))
            shutil.copy(os.path.join(args.work, f"{system}.test2016.hyp"), args.out)
        results["p_value"] = test["p_value"]
        results["signature"] = test["signature"]
        results["chrf_signature"] = test["chrf_signature"]
        results["sweep"] = {run: summarize_run(os.path.join(args.work, run))[0]
                            for run in sorted(os.listdir(args.work)) if run.startswith("sweep-")}
        for system, run in MAIN.items():
            results["sweep"][run] = results[system]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: incomplete experiment in {args.work}: {e}")
    results["machine"] = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads_per_run": int(os.environ.get("OMP_NUM_THREADS", "1")),
    }
    results["commands"] = [
        "bash scripts/setup-venv.sh",
        "bash examples/translation/experiment-multi30k.sh",
    ]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(results))
    plot(logs, os.path.join(args.out, "curves.png"))
    print(markdown(results))


if __name__ == "__main__":
    main()
