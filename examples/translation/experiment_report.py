#!/usr/bin/env python
"""Collect a Multi30k experiment (experiment-*.sh beside this file) into its results folder:
results.json (every figure, the machine, the commands that reproduce it), results.md (its table),
curves.png (the runs' training curves), the test2016 hypotheses (and for the GPU experiment the
json training logs).

  experiment_report.py multi30k --work WORK --select     print the picks: BASELINE_RUN RDROP_RUN
  experiment_report.py multi30k --work WORK --out RESULTS
  experiment_report.py cutoff --work WORK --committed RESULTS --out RESULTS RUN...
  experiment_report.py gpu --work WORK --data-bin DIR --out RESULTS --systems BASELINE SYSTEM...
                       --mode concurrent|sequential --lanes-wall-s S --experiment-wall-s S
                       [--command CMD ...]

What each experiment leaves in WORK is said by its ``collect_*`` function. Nothing is written
unless every input is there.
"""

import argparse
import json
import os
import shutil
import sys

from run_summary import summarize_log, summarize_run

from rdrop_tools.training_logs import plot, read_fairseq_log

# the machine's description, shared with the benchmarks
BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks")
sys.path.insert(0, BENCHMARKS)
from machine import machine_info  # noqa: E402


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def write_results(out, results, table, logs, copies):
    """Write ``results``, ``table`` (markdown), the curves of ``logs`` (``[(run, log)]``) and the
    files ``copies`` (``[(source, name)]``) into the folder ``out``."""
    os.makedirs(out, exist_ok=True)
    for source, name in copies:
        shutil.copy(source, os.path.join(out, name))
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table)
    plot(logs, os.path.join(out, "curves.png"))
    print(table)


# -------------------------------------------------------------------- baseline vs R-Drop (CPU)

SYSTEMS = ("baseline", "rdrop")


def summarize_runs(work):
    """``{run: summary}``, ``{run: log}`` of the finished runs, and ``{system: picked run}``."""
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


def collect_multi30k(work):
    """experiment-multi30k.sh: the runs are the finished folders ``baseline-*`` and ``rdrop-*``
    of WORK, the pick of each kind the one with the best validation BLEU at any epoch;
    WORK/{baseline,rdrop}.test2016.{json,hyp} are the picks' test scores (R-Drop's holds the
    p-value against the baseline)."""
    runs, logs, picks = summarize_runs(work)
    results = {}
    for system, run in picks.items():
        test = read_json(os.path.join(work, f"{system}.test2016.json"))
        results[system] = dict(runs[run], run=run, **{k: test[k] for k in ("bleu", "chrf", "n")})
    # the R-Drop evaluation was given the baseline's hypotheses: it holds the p-value
    for key in ("p_value", "signature", "chrf_signature"):
        results[key] = test[key]
    results["sweep"] = runs
    copies = [(os.path.join(work, f"{s}.test2016.hyp"), f"{s}.test2016.hyp") for s in SYSTEMS]
    return results, sorted(logs.items()), copies


def markdown_multi30k(results):
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
        rows.append(
            f"| {name} | `{s['options']}` | {s['best_valid_bleu']:.2f} "
            f"({s['best_epoch']}) | {s['updates']} | {s['wall_s'] / 60:.0f} min |"
        )
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------- R-Drop + Cutoff, SimCut (CPU)

COMMITTED = (("baseline", "baseline (label_smoothed_cross_entropy)"), ("rdrop", "R-Drop"))
SYSTEM_NAMES = {"cutoff": "R-Drop + Cutoff", "simcut": "SimCut"}


def collect_cutoff(work, committed_dir, runs):
    """experiment-multi30k-cutoff.sh: the committed picks, then each RUN, a finished folder of
    WORK scored as WORK/RUN.test2016.{hyp,json} (p-value against the committed baseline) and
    WORK/RUN.test2016.vs-rdrop.json (against the committed R-Drop pick)."""
    committed = read_json(os.path.join(committed_dir, "results.json"))
    rows = []
    for key, name in COMMITTED:
        row = dict(committed[key], system=name, source=f"committed ({committed_dir})")
        row["vs_baseline"] = (
            {
                "delta_bleu": row["bleu"] - committed["baseline"]["bleu"],
                "p_value": committed["p_value"],
            }
            if key == "rdrop"
            else None
        )
        row["vs_rdrop"] = None
        rows.append(row)
    logs = []
    for run in runs:
        summary, log = summarize_run(os.path.join(work, run))
        test = read_json(os.path.join(work, f"{run}.test2016.json"))
        vs_rdrop = read_json(os.path.join(work, f"{run}.test2016.vs-rdrop.json"))
        if vs_rdrop["bleu"] != test["bleu"]:
            raise ValueError(f"{run}: the two test2016 scorings disagree (re-run the experiment)")
        rows.append(
            dict(
                summary,
                run=run,
                system=SYSTEM_NAMES.get(run.split("-")[0], run),
                source="this run",
                **{k: test[k] for k in ("bleu", "chrf", "n")},
                vs_baseline={
                    "delta_bleu": test["bleu"] - committed["baseline"]["bleu"],
                    "p_value": test["p_value"],
                },
                vs_rdrop={
                    "delta_bleu": test["bleu"] - committed["rdrop"]["bleu"],
                    "p_value": vs_rdrop["p_value"],
                },
            )
        )
        logs.append((run, log))
    results = {"systems": rows, **{k: test[k] for k in ("signature", "chrf_signature")}}
    copies = [(os.path.join(work, f"{run}.test2016.hyp"), f"{run}.test2016.hyp") for run in runs]
    return results, logs, copies


def markdown_cutoff(results):
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
        + "; ".join(
            f"{s['run']}: `{s['options']}`" for s in results["systems"] if s["source"] == "this run"
        ),
        f"(BLEU {results['signature']}; chrF {results['chrf_signature']}; p: paired bootstrap "
        "against the committed test2016 hypotheses)",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ GPU


def summarize_system(work, system, log):
    """One system's figures: training (its json log), test2016 (its scores), the commands."""
    test = read_json(os.path.join(work, f"{system}.test2016.json"))
    return {
        "train_command": read_text(os.path.join(work, system, "command.txt")),
        "test_command": read_text(os.path.join(work, system, "test-command.txt")),
        **summarize_log(log),
        "final_train_nll_loss": log["train"][-1]["nll_loss"],
        "final_valid_nll_loss": log["valid"][-1]["nll_loss"],
        **{k: test[k] for k in ("bleu", "chrf", "tok_bleu", "n", "signature", "chrf_signature")},
    }


def compare(work, system, summary, baseline):
    """Add the paired bootstrap against the baseline; its scores must be the ones summarized."""
    paired = read_json(os.path.join(work, f"{system}.vs-baseline.json"))
    summary["paired_command"] = read_text(os.path.join(work, system, "paired-command.txt"))
    pairs = ((paired["bleu"], summary["bleu"]), (paired["baseline_bleu"], baseline["bleu"]))
    if any(abs(mine - theirs) > 1e-9 for mine, theirs in pairs):
        raise ValueError(f"{system}.vs-baseline.json scored other hypotheses than the test runs")
    summary["delta_bleu"] = summary["bleu"] - baseline["bleu"]
    summary["delta_chrf"] = summary["chrf"] - baseline["chrf"]
    summary["p_value"] = paired["p_value"]


def collect_gpu(work, data_bin, systems_run, mode, lanes_wall_s, experiment_wall_s):
    """experiment-multi30k-gpu.sh: WORK/SYSTEM/ holds train.log, command.txt, test-command.txt;
    WORK/SYSTEM.test2016.{json,hyp} are its test scores; for every system but the first (the
    baseline), WORK/SYSTEM.vs-baseline.json is the paired bootstrap against it, run as
    WORK/SYSTEM/paired-command.txt."""
    baseline = systems_run[0]
    systems, logs, copies = {}, [], []
    for system in systems_run:
        log = read_fairseq_log(os.path.join(work, system, "train.log"))
        systems[system] = summarize_system(work, system, log)
        if system != baseline:
            compare(work, system, systems[system], systems[baseline])
        logs.append((system, log))
        copies += [
            (os.path.join(work, f"{system}.test2016.hyp"), f"{system}.test2016.hyp"),
            (os.path.join(work, system, "train.log"), f"{system}.train.log"),
        ]
    with open(os.path.join(data_bin, "dict.en.txt"), encoding="utf-8") as f:
        dictionary = sum(1 for _ in f)
    results = {
        "baseline": baseline,
        "systems": systems,
        "mode": mode,
        "lanes_wall_s": lanes_wall_s,
        "experiment_wall_s": experiment_wall_s,
        "equal_updates": len({s["updates"] for s in systems.values()}) == 1,
        "data": {
            "data_bin": os.path.basename(os.path.normpath(data_bin)),
            "dictionary_entries": dictionary,
            "test_sentences": systems[baseline]["n"],
        },
    }
    return results, logs, copies


def markdown_gpu(results):
    systems = results["systems"]
    base = systems[results["baseline"]]
    rows = [
        "| system | test2016 BLEU | chrF | Δ BLEU | p | best valid BLEU (epoch) | updates | "
        "train wall | median wps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in systems.items():
        delta = f"{s['delta_bleu']:+.2f}" if "delta_bleu" in s else "–"
        p = f"{s['p_value']:.4f}" if "p_value" in s else "–"
        rows.append(
            f"| {name} | {s['bleu']:.2f} | {s['chrf']:.2f} | {delta} | {p} | "
            f"{s['best_valid_bleu']:.2f} ({s['best_epoch']}) | {s['updates']} | "
            f"{s['wall_s']:.0f} s | {s['median_train_wps']:.0f} |"
        )
    device = results["machine"]["device"]
    device = "the CPU" if device == "cpu" else device
    rows += [
        "",
        f"{results['mode']} runs on {device}: {results['lanes_wall_s']} s of training and "
        f"testing, {results['experiment_wall_s']} s in all"
        + (
            "" if results["equal_updates"] else "; NOT at equal updates (stopped by the time limit)"
        ),
        f"p: paired bootstrap against {results['baseline']} (BLEU {base['signature']}; "
        f"chrF {base['chrf_signature']})",
    ]
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------ cli


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    experiments = parser.add_subparsers(dest="experiment", required=True)
    multi30k, cutoff, gpu = (
        experiments.add_parser(name, help=text)
        for name, text in (
            ("multi30k", "baseline vs R-Drop, with a sweep on val"),
            ("cutoff", "R-Drop + Cutoff and SimCut beside the committed picks"),
            ("gpu", "baseline vs R-Drop vs R-Drop + Cutoff on a GPU"),
        )
    )
    for experiment in (multi30k, cutoff, gpu):
        experiment.add_argument("--work", required=True, help="the experiment's work folder")
    action = multi30k.add_mutually_exclusive_group(required=True)
    action.add_argument("--select", action="store_true", help="print the two picked runs")
    action.add_argument("--out", help="results folder to write")
    cutoff.add_argument(
        "--committed",
        required=True,
        help="results folder of experiment-multi30k.sh (baseline and R-Drop)",
    )
    cutoff.add_argument("--out", required=True, help="results folder to write")
    cutoff.add_argument("runs", nargs="+", metavar="RUN")
    gpu.add_argument("--data-bin", required=True)
    gpu.add_argument("--out", required=True, help="results folder to write")
    gpu.add_argument("--systems", nargs="+", required=True, help="the baseline first")
    gpu.add_argument("--mode", choices=["concurrent", "sequential"], required=True)
    gpu.add_argument("--lanes-wall-s", type=int, required=True)
    gpu.add_argument("--experiment-wall-s", type=int, required=True)
    gpu.add_argument("--command", action="append", default=[], help="a command that ran it")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if args.experiment == "multi30k" and args.select:
            picks = summarize_runs(args.work)[2]
            print(picks["baseline"], picks["rdrop"])
            return
        if args.experiment == "gpu":
            results, logs, copies = collect_gpu(
                args.work,
                args.data_bin,
                args.systems,
                args.mode,
                args.lanes_wall_s,
                args.experiment_wall_s,
            )
            commands, markdown = args.command, markdown_gpu
        else:
            cutoff = args.experiment == "cutoff"
            results, logs, copies = (
                collect_cutoff(args.work, args.committed, args.runs)
                if cutoff
                else collect_multi30k(args.work)
            )
            script = "experiment-multi30k-cutoff.sh" if cutoff else "experiment-multi30k.sh"
            commands = ["bash scripts/setup-venv.sh", f"bash examples/translation/{script}"]
            markdown = markdown_cutoff if cutoff else markdown_multi30k
        for source, _ in copies:  # every input is there before anything is written
            if not os.path.isfile(source):
                raise FileNotFoundError(f"no file {source}")
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: incomplete experiment in {args.work}: {e}")
    results.update(machine=machine_info(), commands=commands)
    write_results(args.out, results, markdown(results), logs, copies)


if __name__ == "__main__":
    main()
