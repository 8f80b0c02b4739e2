#!/usr/bin/env python
"""Collect the Multi30k R-Drop + Cutoff / SimCut experiment
(examples/translation/experiment-multi30k-cutoff.sh) into results.json, the test hypotheses,
curves.png and a markdown table, beside the committed baseline and R-Drop picks.

  multi30k_cutoff_report.py --work WORK_DIR --committed RESULTS_DIR --out RESULTS_DIR RUN...

Each RUN is a finished training folder of WORK_DIR, scored on test2016 by the experiment:
WORK_DIR/RUN.test2016.{hyp,json} (p-value against the committed baseline) and
WORK_DIR/RUN.test2016.vs-rdrop.json (p-value against the committed R-Drop pick).
"""

import argparse
import json
import os
import shutil
import sys

from rdrop_tools.experiment_results import write_results
from rdrop_tools.training_logs import summarize_run

COMMITTED = (("baseline", "baseline (label_smoothed_cross_entropy)"), ("rdrop", "R-Drop"))
SYSTEM_NAMES = {"cutoff": "R-Drop + Cutoff", "simcut": "SimCut"}


def load_json(path):
    with open(path) as f:
        return json.load(f)


def collect(work, committed_dir, runs):
    """``{"systems": [row...], ...}``: the committed picks first, then each run."""
    committed = load_json(os.path.join(committed_dir, "results.json"))
    rows = []
    for key, name in COMMITTED:
        row = dict(committed[key], system=name, source=f"committed ({committed_dir})")
        row["vs_baseline"] = ({"delta_bleu": row["bleu"] - committed["baseline"]["bleu"],
                               "p_value": committed["p_value"]} if key == "rdrop" else None)
        row["vs_rdrop"] = None
        rows.append(row)
    logs = []
    for run in runs:
        summary, log = summarize_run(os.path.join(work, run))
        test = load_json(os.path.join(work, f"{run}.test2016.json"))
        vs_rdrop = load_json(os.path.join(work, f"{run}.test2016.vs-rdrop.json"))
        if vs_rdrop["bleu"] != test["bleu"]:
            raise ValueError(f"{run}: the two test2016 scorings disagree (re-run the experiment)")
        rows.append(dict(
            summary, run=run, system=SYSTEM_NAMES.get(run.split("-")[0], run), source="this run",
            **{k: test[k] for k in ("bleu", "chrf", "n")},
            vs_baseline={"delta_bleu": test["bleu"] - committed["baseline"]["bleu"],
                         "p_value": test["p_value"]},
            vs_rdrop={"delta_bleu": test["bleu"] - committed["rdrop"]["bleu"],
                      "p_value": vs_rdrop["p_value"]},
        ))
        logs.append((run, log))
    signatures = {k: test[k] for k in ("signature", "chrf_signature")}
    return {"systems": rows, **signatures}, logs


def markdown(results):
    def delta(d):
        return "—" if d is None else f"{d['delta_bleu']:+.2f} (p = {d['p_value']:.4f})"

    lines = [
        "| system | run | test2016 BLEU | chrF | vs baseline: ΔBLEU (p) | vs R-Drop: ΔBLEU (p) "
        "| best valid BLEU (epoch) | updates | wall time | train tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["systems"]:
        lines.append(
            f"| {s['system']} | {s['run']} | {s['bleu']:.2f} | {s['chrf']:.2f} | "
            f"{delta(s['vs_baseline'])} | {delta(s['vs_rdrop'])} | "
            f"{s['best_valid_bleu']:.2f} ({s['best_epoch']}) | {s['updates']} | "
            f"{s['wall_s'] / 60:.0f} min | {s['median_train_wps']:.0f} |"
        )
    lines += [
        "",
        "Options of the new runs (train-multi30k.sh, 20 epochs): "
        + "; ".join(f"{s['run']}: `{s['options']}`"
                    for s in results["systems"] if s["source"] == "this run"),
        f"(BLEU {results['signature']}; chrF {results['chrf_signature']}; p: paired bootstrap "
        "against the committed test2016 hypotheses)",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="the experiment's work folder")
    parser.add_argument("--committed", required=True,
                        help="results folder of experiment-multi30k.sh (baseline and R-Drop)")
    parser.add_argument("--out", required=True, help="results folder to write")
    parser.add_argument("runs", nargs="+", metavar="RUN")
    args = parser.parse_args(argv)
    try:
        results, logs = collect(args.work, args.committed, args.runs)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: incomplete experiment in {args.work}: {e}")
    os.makedirs(args.out, exist_ok=True)
    for run in args.runs:
        shutil.copy(os.path.join(args.work, f"{run}.test2016.hyp"), args.out)
    write_results(args.out, results, markdown(results), logs,
                  ["bash examples/translation/experiment-multi30k-cutoff.sh"])


if __name__ == "__main__":
    main()
