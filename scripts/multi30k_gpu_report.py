#!/usr/bin/env python
"""Collect the GPU Multi30k experiment (examples/translation/experiment-multi30k-gpu.sh) into a
results folder: results.json (every figure and the exact commands), results.md, curves.png, and
per system its test2016 hypotheses (SYSTEM.test2016.hyp) and json training log (SYSTEM.train.log).

  multi30k_gpu_report.py --work WORK --data-bin DIR --out RESULTS --systems BASELINE SYSTEM...
                         --mode concurrent|sequential --lanes-wall-s S --experiment-wall-s S
                         [--command CMD ...]

For each system WORK/SYSTEM/ holds train.log (fairseq --log-format json), command.txt and
test-command.txt; WORK/SYSTEM.test2016.{json,hyp} are its test scores and hypotheses
(eval-multi30k.sh); for every system but the first, the baseline, WORK/SYSTEM.vs-baseline.json is
the paired bootstrap against it (evaluate.py --baseline-hyp), run as WORK/SYSTEM/paired-command.txt.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys

from rdrop_tools.training_logs import plot, read_fairseq_log


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def summarize(work, system, log):
    """One system's figures: training (from its json log) and test2016 (from its scores)."""
    best = max(log["valid"], key=lambda r: r["bleu"])
    last, last_valid = log["train"][-1], log["valid"][-1]
    test = read_json(os.path.join(work, f"{system}.test2016.json"))
    return {
        "train_command": read_text(os.path.join(work, system, "command.txt")),
        "test_command": read_text(os.path.join(work, system, "test-command.txt")),
        "updates": int(last["num_updates"]),
        "epochs": int(last["epoch"]),
        "train_wall_s": last["wall"],
        "median_train_wps": statistics.median(r["wps"] for r in log["train"]),
        "best_valid_bleu": best["bleu"],
        "best_epoch": int(best["epoch"]),
        "final_train_nll_loss": last["nll_loss"],
        "final_valid_nll_loss": last_valid["nll_loss"],
        "final_train_kl_loss": last.get("kl_loss"),
        "bleu": test["bleu"],
        "chrf": test["chrf"],
        "tok_bleu": test["tok_bleu"],
        "n": test["n"],
    }, test


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


def machine():
    import torch

    versions = {}
    for name in ("ve-fairseq", "fairseq", "sacrebleu"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        **versions,
    }


def markdown(results):
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
            f"{s['train_wall_s']:.0f} s | {s['median_train_wps']:.0f} |"
        )
    m = results["machine"]
    rows += [
        "",
        f"{results['mode']} runs on {m['gpu'] or 'the CPU'}: {results['lanes_wall_s']} s of "
        f"training and testing, {results['experiment_wall_s']} s in all"
        + ("" if results["equal_updates"] else "; NOT at equal updates (stopped by the time limit)"),
        f"p: paired bootstrap against {results['baseline']} (BLEU {base['signature']}; "
        f"chrF {base['chrf_signature']})",
    ]
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--data-bin", required=True)
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--systems", nargs="+", required=True, help="the baseline first")
    parser.add_argument("--mode", choices=["concurrent", "sequential"], required=True)
    parser.add_argument("--lanes-wall-s", type=int, required=True)
    parser.add_argument("--experiment-wall-s", type=int, required=True)
    parser.add_argument("--command", action="append", default=[], help="a command that ran it")
    args = parser.parse_args(argv)
    baseline = args.systems[0]
    systems, logs = {}, {}
    try:
        for system in args.systems:
            logs[system] = read_fairseq_log(os.path.join(args.work, system, "train.log"))
            systems[system], test = summarize(args.work, system, logs[system])
            systems[system]["signature"] = test["signature"]
            systems[system]["chrf_signature"] = test["chrf_signature"]
            if system != baseline:
                compare(args.work, system, systems[system], systems[baseline])
        with open(os.path.join(args.data_bin, "dict.en.txt"), encoding="utf-8") as f:
            dictionary = sum(1 for _ in f)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: incomplete experiment in {args.work}: {e}")
    results = {
        "baseline": baseline,
        "systems": systems,
        "mode": args.mode,
        "lanes_wall_s": args.lanes_wall_s,
        "experiment_wall_s": args.experiment_wall_s,
        "equal_updates": len({s["updates"] for s in systems.values()}) == 1,
        "data": {
            "data_bin": os.path.basename(os.path.normpath(args.data_bin)),
            "dictionary_entries": dictionary,
            "test_sentences": systems[baseline]["n"],
        },
        "machine": machine(),
        "commands": args.command,
    }
    os.makedirs(args.out, exist_ok=True)
    for system in args.systems:
        shutil.copy(os.path.join(args.work, f"{system}.test2016.hyp"), args.out)
        shutil.copy(os.path.join(args.work, system, "train.log"),
                    os.path.join(args.out, f"{system}.train.log"))
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results))
    plot(list(logs.items()), os.path.join(args.out, "curves.png"))
    print(markdown(results))


if __name__ == "__main__":
    main()
