#!/usr/bin/env python
"""Collect the Multi30k baseline-vs-R-Drop experiment (examples/translation/experiment-multi30k.sh)
into results.json, the test hypotheses, curves.png and a markdown table.

  multi30k_report.py --work WORK_DIR --select        print the picks: BASELINE_RUN RDROP_RUN
  multi30k_report.py --work WORK_DIR --out RESULTS_DIR

Runs are the folders ``baseline-*`` and ``rdrop-*`` of WORK_DIR; the pick of each kind is the run
with the best validation BLEU at any epoch (its checkpoint_best.pt).
"""

import argparse
import json
import os
import shutil
import sys

from rdrop_tools.experiment_results import write_results
from rdrop_tools.training_logs import summarize_run

SYSTEMS = ("baseline", "rdrop")


def summarize_runs(work):
    """``{run: summary}`` of the finished runs, and ``{system: picked run}``."""
    runs, logs = {}, {}
    for run in sorted(os.listdir(work)):
        if run.startswith(SYSTEMS) and os.path.exists(os.path.join(work, run, ".done")):
            runs[run], logs[run] = summarize_run(os.path.join(work, run))
    picks = {}
    for system in SYSTEMS:
        candidates = [run for run in runs if run.startswith(system + "-")]
        if not candidates:
            raise ValueError(f"no finished {system}-* run")
        picks[system] = max(candidates, key=lambda run: runs[run]["best_valid_bleu"])
    return runs, logs, picks


def markdown(results):
    b, r = results["baseline"], results["rdrop"]
    rows = [
        "| system | run | test2016 BLEU | chrF | best valid BLEU (epoch) | updates | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in (("baseline (label_smoothed_cross_entropy)", b), ("R-Drop", r)):
        rows.append(
            f"| {name} | {s['run']} | {s['bleu']:.2f} | {s['chrf']:.2f} | "
            f"{s['best_valid_bleu']:.2f} ({s['best_epoch']}) | {s['updates']} | "
            f"{s['wall_s'] / 60:.0f} min |"
        )
    rows += [
        "",
        f"R-Drop − baseline on test2016: {r['bleu'] - b['bleu']:+.2f} BLEU, "
        f"{r['chrf'] - b['chrf']:+.2f} chrF; paired bootstrap p = {results['p_value']:.4f}",
        f"(BLEU {results['signature']}; chrF {results['chrf_signature']})",
        "",
        "| sweep run (val) | options | best valid BLEU (epoch) | updates | wall time |",
        "|---|---|---|---|---|",
    ]
    for name, s in results["sweep"].items():
        rows.append(f"| {name} | `{s['options']}` | {s['best_valid_bleu']:.2f} "
                    f"({s['best_epoch']}) | {s['updates']} | {s['wall_s'] / 60:.0f} min |")
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--select", action="store_true", help="print the two picked runs")
    action.add_argument("--out", help="results folder")
    args = parser.parse_args(argv)
    try:
        runs, logs, picks = summarize_runs(args.work)
        if args.select:
            print(picks["baseline"], picks["rdrop"])
            return
        os.makedirs(args.out, exist_ok=True)
        results = {}
        for system, run in picks.items():
            with open(os.path.join(args.work, f"{system}.test2016.json")) as f:
                test = json.load(f)
            results[system] = dict(runs[run], run=run, **{k: test[k] for k in ("bleu", "chrf", "n")})
            shutil.copy(os.path.join(args.work, f"{system}.test2016.hyp"), args.out)
        # the R-Drop evaluation was given the baseline's hypotheses: it holds the p-value
        for key in ("p_value", "signature", "chrf_signature"):
            results[key] = test[key]
        results["sweep"] = runs
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: incomplete experiment in {args.work}: {e}")
    write_results(args.out, results, markdown(results), sorted(logs.items()),
                  ["bash examples/translation/experiment-multi30k.sh"])


if __name__ == "__main__":
    main()
