"""The experiment reports (examples/translation/experiment_report.py): the figures they take from
fairseq's json logs (rdrop_tools/training_logs.py), and each experiment's results folder. The
committed results' inputs (days of training logs) are not in the repository: each committed
results folder is regenerated from synthetic logs that hold its figures, and must come out the
same, table byte for byte, only the machine being this one.

The report is a script beside the experiments: this module puts its folder on sys.path and
imports it."""

import json
import sys

import pytest

from support import ROOT

EXPERIMENTS = ROOT / "examples" / "translation"
sys.path.insert(0, str(EXPERIMENTS))
import experiment_report  # noqa: E402
from machine import machine_info  # noqa: E402  (benchmarks/, on the path of experiment_report)
from run_summary import summarize_run, total_wall_s  # noqa: E402

COMMITTED = EXPERIMENTS / "results"
SUMMARY_KEYS = (
    "options",
    "epochs",
    "updates",
    "wall_s",
    "median_train_wps",
    "best_valid_bleu",
    "best_epoch",
    "final_train_kl_loss",
)


def committed(name):
    folder = COMMITTED / name
    return folder, json.loads((folder / "results.json").read_text(encoding="utf-8"))


def train_records(summary):
    """One json train and valid record an epoch whose summary is ``summary``: equal updates per
    epoch, the wall clock rising to wall_s, the best valid BLEU at best_epoch."""
    epochs = summary["epochs"]
    lines = []
    for epoch in range(1, epochs + 1):
        train = {
            "epoch": epoch,
            "train_loss": "5.1",
            "train_nll_loss": str(4 - epoch / 10),
            "train_wps": str(summary["median_train_wps"]),
            "train_num_updates": str(summary["updates"] // epochs * epoch),
            "train_wall": str(
                summary["wall_s"]
                if epoch == epochs
                else round(summary["wall_s"] * epoch / epochs, 1)
            ),
        }
        if summary["final_train_kl_loss"] is not None:
            train["train_kl_loss"] = str(summary["final_train_kl_loss"])
        bleu = summary["best_valid_bleu"] - (
            0 if epoch == summary["best_epoch"] else 1 + epoch / 100
        )
        valid = {
            "epoch": epoch,
            "valid_loss": "4.8",
            "valid_nll_loss": str(3 + epoch / 100),
            "valid_bleu": str(round(bleu, 2)),
            "valid_num_updates": train["train_num_updates"],
        }
        lines.append("2026-11-26 | INFO | train | " + json.dumps(train))
        lines.append("2026-11-26 | INFO | valid on 'valid' subset | " + json.dumps(valid))
    return "\n".join(lines) + "\n"


def write_run(run_dir, summary):
    """A finished training folder of experiment-multi30k*.sh: json train.log and .done."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.log").write_text(train_records(summary))
    (run_dir / ".done").write_text(summary["options"] + "\n")


def write_scores(prefix, row, **more):
    """PREFIX.hyp and PREFIX.json as eval-multi30k.sh leaves them for the scores of ``row``."""
    prefix.with_name(prefix.name + ".hyp").write_text(f"a hypothesis of {prefix.name}\n")
    scores = {k: row[k] for k in ("bleu", "chrf", "n")}
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(dict(scores, **more)))


def report(*argv):
    experiment_report.main([str(a) for a in argv])


def without_machine(results):
    return {k: v for k, v in results.items() if k != "machine"}


def test_wall_time_adds_up_the_segments_of_a_resumed_run():
    # fairseq's wall clock restarts at 0 after each resume (here after epochs 2 and 3)
    walls = [100.0, 210.0, 90.0, 60.0, 130.0]
    records = [{"epoch": e + 1, "wall": w} for e, w in enumerate(walls)]
    assert total_wall_s(records) == 210.0 + 90.0 + 130.0
    assert total_wall_s(records[:2]) == 210.0  # never resumed: the last figure


def test_a_run_is_summarized_from_its_json_log_and_options(tmp_path):
    summary = {
        "options": "--rdrop-alpha 2 --dropout 0.1",
        "epochs": 3,
        "updates": 789,
        "wall_s": 315.0,
        "median_train_wps": 1602.0,
        "best_valid_bleu": 31.5,
        "best_epoch": 2,
        "final_train_kl_loss": 0.4,
    }
    write_run(tmp_path, summary)
    got, log = summarize_run(tmp_path)
    assert got == summary and list(got) == list(SUMMARY_KEYS)
    assert [r["bleu"] for r in log["valid"]] == [30.49, 31.5, 30.47]


def multi30k_work(work, results):
    """The work folder experiment-multi30k.sh leaves, for the figures of ``results``."""
    for run, summary in results["sweep"].items():
        write_run(work / run, summary)
    write_scores(work / "baseline.test2016", results["baseline"])
    write_scores(
        work / "rdrop.test2016",
        results["rdrop"],
        p_value=results["p_value"],
        **{k: results[k] for k in ("signature", "chrf_signature")},
    )


def test_the_multi30k_results_come_out_as_committed(tmp_path, capsys):
    folder, results = committed("multi30k")
    work, out = tmp_path / "work", tmp_path / "out"
    multi30k_work(work, results)
    report("multi30k", "--work", work, "--select")
    assert capsys.readouterr().out.split() == [results["baseline"]["run"], results["rdrop"]["run"]]
    report("multi30k", "--work", work, "--out", out)
    regenerated = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert without_machine(regenerated) == without_machine(results)
    assert list(regenerated) == list(results)
    assert regenerated["machine"] == json.loads(json.dumps(machine_info()))
    assert (out / "results.md").read_text(encoding="utf-8") == (folder / "results.md").read_text(
        encoding="utf-8"
    )
    for system in ("baseline", "rdrop"):
        assert (
            out / f"{system}.test2016.hyp"
        ).read_text() == f"a hypothesis of {system}.test2016\n"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def cutoff_work(work, results):
    """The work folder experiment-multi30k-cutoff.sh leaves, for the runs of ``results``."""
    runs = [s for s in results["systems"] if s["source"] == "this run"]
    signatures = {k: results[k] for k in ("signature", "chrf_signature")}
    for row in runs:
        write_run(work / row["run"], {k: row[k] for k in SUMMARY_KEYS})
        write_scores(
            work / f"{row['run']}.test2016",
            row,
            p_value=row["vs_baseline"]["p_value"],
            **signatures,
        )
        rescored = {k: row[k] for k in ("bleu", "chrf", "n")}
        (work / f"{row['run']}.test2016.vs-rdrop.json").write_text(
            json.dumps(dict(rescored, p_value=row["vs_rdrop"]["p_value"], **signatures))
        )
    return [row["run"] for row in runs]


def test_the_cutoff_results_come_out_as_committed(tmp_path):
    folder, results = committed("multi30k-cutoff")
    picks, _ = committed("multi30k")
    work, out = tmp_path / "work", tmp_path / "out"
    runs = cutoff_work(work, results)
    report("cutoff", "--work", work, "--committed", picks, "--out", out, *runs)
    regenerated = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for row in results["systems"][:2]:  # the committed picks' folder, as the experiment named it
        row["source"] = f"committed ({picks})"
    assert without_machine(regenerated) == without_machine(results)
    assert list(regenerated) == list(results)
    assert (out / "results.md").read_text(encoding="utf-8") == (folder / "results.md").read_text(
        encoding="utf-8"
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["curves.png", "results.json", "results.md", *(f"{run}.test2016.hyp" for run in runs)]
    )


def test_the_cutoff_report_refuses_two_scorings_of_a_run_that_disagree(tmp_path):
    _, results = committed("multi30k-cutoff")
    work, out = tmp_path / "work", tmp_path / "out"
    run = cutoff_work(work, results)[0]
    rescored = work / f"{run}.test2016.vs-rdrop.json"
    rescored.write_text(json.dumps(dict(json.loads(rescored.read_text()), bleu=1.0)))
    with pytest.raises(SystemExit) as exit_info:
        report("cutoff", "--work", work, "--committed", COMMITTED / "multi30k", "--out", out, run)
    assert str(exit_info.value).startswith("error: incomplete experiment")
    assert "disagree" in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert not out.exists()


def test_a_missing_hypothesis_file_stops_the_report_before_it_writes(tmp_path):
    _, results = committed("multi30k")
    work, out = tmp_path / "work", tmp_path / "out"
    multi30k_work(work, results)
    (work / "rdrop.test2016.hyp").unlink()
    with pytest.raises(SystemExit) as exit_info:
        report("multi30k", "--work", work, "--out", out)
    assert "rdrop.test2016.hyp" in str(exit_info.value) and not out.exists()


def gpu_work(work, data_bin, baseline_bleu=30.0):
    """What experiment-multi30k-gpu.sh leaves for a baseline and one R-Drop system."""
    data_bin.mkdir()
    (data_bin / "dict.en.txt").write_text("".join(f"w{i} 1\n" for i in range(12)))
    signatures = {"signature": "BLEU-sig", "chrf_signature": "chrF-sig"}
    for system, bleu in (("baseline", 30.0), ("rdrop", 31.5)):
        summary = dict(zip(SUMMARY_KEYS, ("", 3, 300, 60.0, 5000.0, 20.0, 3, None)))
        if system == "rdrop":
            summary["final_train_kl_loss"] = 0.3
        (work / system).mkdir(parents=True)
        (work / system / "train.log").write_text(train_records(summary))
        for name in ("command", "test-command", "paired-command"):
            (work / system / f"{name}.txt").write_text(f"{name} of {system}\n")
        write_scores(
            work / f"{system}.test2016",
            {"bleu": bleu, "chrf": 50.0, "n": 8},
            tok_bleu=bleu + 1,
            **signatures,
        )
    (work / "rdrop.vs-baseline.json").write_text(
        json.dumps({"bleu": 31.5, "baseline_bleu": baseline_bleu, "p_value": 0.02})
    )


def gpu_report(tmp_path, **work):
    gpu_work(tmp_path / "work", tmp_path / "data-bin", **work)
    report(
        "gpu",
        "--work",
        tmp_path / "work",
        "--data-bin",
        tmp_path / "data-bin",
        "--out",
        tmp_path / "out",
        "--systems",
        "baseline",
        "rdrop",
        "--mode",
        "sequential",
        "--lanes-wall-s",
        100,
        "--experiment-wall-s",
        120,
        "--command",
        "bash experiment",
    )


def test_the_gpu_report_compares_each_system_with_the_baseline(tmp_path):
    gpu_report(tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    rdrop = results["systems"]["rdrop"]
    assert rdrop["delta_bleu"] == pytest.approx(1.5) and rdrop["p_value"] == 0.02
    assert rdrop["train_command"] == "command of rdrop" and rdrop["final_train_kl_loss"] == 0.3
    assert results["data"] == {
        "data_bin": "data-bin",
        "dictionary_entries": 12,
        "test_sentences": 8,
    }
    assert results["equal_updates"] and results["commands"] == ["bash experiment"]
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| rdrop | 31.50 | 50.00 | +1.50 | 0.0200 | 20.00 (3) | 300 | 60 s | 5000 |" in table
    assert "sequential runs on the CPU: 100 s" in table
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "baseline.test2016.hyp",
        "baseline.train.log",
        "curves.png",
        "rdrop.test2016.hyp",
        "rdrop.train.log",
        "results.json",
        "results.md",
    ]


def test_the_gpu_report_refuses_a_bootstrap_of_other_hypotheses(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        gpu_report(tmp_path, baseline_bleu=29.0)
    assert "scored other hypotheses" in str(exit_info.value)
    assert not (tmp_path / "out").exists()
