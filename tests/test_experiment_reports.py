"""The experiment reports (examples/translation/experiment_report.py): the figures they take from
fairseq's json logs (rdrop_tools/training_logs.py), each report on a small work folder whose
results are written out by hand here, and the committed results folders checked against
themselves (table against json, picks against the sweep, the cutoff experiment against the
picks it quotes, the GPU figures against the training logs committed beside them).

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
from run_summary import summarize_log, summarize_run, total_wall_s  # noqa: E402

from rdrop_tools.training_logs import read_fairseq_log  # noqa: E402

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


def summary(options, best_valid_bleu, epochs=2, kl=None):
    """A run's figures, as summarize_run gives them, for a run of 100 updates an epoch taking
    5 minutes an epoch at 1 000 tokens/s, best on valid at its last epoch."""
    return {
        "options": options,
        "epochs": epochs,
        "updates": 100 * epochs,
        "wall_s": 300.0 * epochs,
        "median_train_wps": 1000.0,
        "best_valid_bleu": best_valid_bleu,
        "best_epoch": epochs,
        "final_train_kl_loss": kl,
    }


SWEEP = {
    "baseline-d0.1": summary("--baseline --dropout 0.1", 30.0),
    "baseline-d0.3": summary("--baseline --dropout 0.3", 29.0, epochs=3),
    "rdrop-a2": summary("--rdrop-alpha 2", 31.0, kl=0.5),
    "rdrop-a5": summary("--rdrop-alpha 5", 30.5, kl=0.25),
}
SIGNATURES = {"signature": "BLEU-sig", "chrf_signature": "chrF-sig"}


def multi30k_work(work):
    """What experiment-multi30k.sh leaves: the sweep's four finished runs, one unfinished run
    with the best valid BLEU of all (no .done: not a candidate), the picks' test scores."""
    for run, figures in SWEEP.items():
        write_run(work / run, figures)
    write_run(work / "rdrop-a9", summary("--rdrop-alpha 9", 40.0))
    (work / "rdrop-a9" / ".done").unlink()
    write_scores(work / "baseline.test2016", {"bleu": 32.0, "chrf": 55.0, "n": 4})
    write_scores(
        work / "rdrop.test2016", {"bleu": 33.25, "chrf": 55.5, "n": 4}, p_value=0.0123, **SIGNATURES
    )


def test_the_multi30k_report_picks_the_best_valid_run_of_each_kind(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    multi30k_work(work)
    report("multi30k", "--work", work, "--select")
    assert capsys.readouterr().out == "baseline-d0.1 rdrop-a2\n"
    report("multi30k", "--work", work, "--out", out)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results) == [
        "baseline",
        "rdrop",
        "p_value",
        "signature",
        "chrf_signature",
        "sweep",
        "machine",
        "commands",
    ]
    assert results["baseline"] == dict(
        SWEEP["baseline-d0.1"], run="baseline-d0.1", bleu=32.0, chrf=55.0, n=4
    )
    assert results["rdrop"] == dict(SWEEP["rdrop-a2"], run="rdrop-a2", bleu=33.25, chrf=55.5, n=4)
    assert results["p_value"] == 0.0123
    assert (results["signature"], results["chrf_signature"]) == ("BLEU-sig", "chrF-sig")
    assert results["sweep"] == SWEEP
    assert results["machine"] == json.loads(json.dumps(machine_info()))
    assert results["commands"] == [
        "bash scripts/setup-venv.sh",
        "bash examples/translation/experiment-multi30k.sh",
    ]
    assert (out / "results.md").read_text(encoding="utf-8") == (
        "| system | run | test2016 BLEU | chrF | best valid BLEU (epoch) | updates | wall time |\n"
        "|---|---|---|---|---|---|---|\n"
        "| baseline (label_smoothed_cross_entropy) | baseline-d0.1 | 32.00 | 55.00 | 30.00 (2) "
        "| 200 | 10 min |\n"
        "| R-Drop | rdrop-a2 | 33.25 | 55.50 | 31.00 (2) | 200 | 10 min |\n"
        "\n"
        "R-Drop − baseline on test2016: +1.25 BLEU, +0.50 chrF; paired bootstrap p = 0.0123\n"
        "(BLEU BLEU-sig; chrF chrF-sig)\n"
        "\n"
        "| sweep run (val) | options | best valid BLEU (epoch) | updates | wall time |\n"
        "|---|---|---|---|---|\n"
        "| baseline-d0.1 | `--baseline --dropout 0.1` | 30.00 (2) | 200 | 10 min |\n"
        "| baseline-d0.3 | `--baseline --dropout 0.3` | 29.00 (3) | 300 | 15 min |\n"
        "| rdrop-a2 | `--rdrop-alpha 2` | 31.00 (2) | 200 | 10 min |\n"
        "| rdrop-a5 | `--rdrop-alpha 5` | 30.50 (2) | 200 | 10 min |\n"
    )
    for system in ("baseline", "rdrop"):
        hyp = (out / f"{system}.test2016.hyp").read_text()
        assert hyp == f"a hypothesis of {system}.test2016\n"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def committed_picks(folder):
    """A results folder of experiment-multi30k.sh, as much of it as the cutoff report reads."""
    folder.mkdir()
    picks = {
        "baseline": dict(SWEEP["baseline-d0.1"], run="baseline-d0.1", bleu=32.0, chrf=55.0, n=4),
        "rdrop": dict(SWEEP["rdrop-a2"], run="rdrop-a2", bleu=33.25, chrf=55.5, n=4),
        "p_value": 0.0123,
        **SIGNATURES,
    }
    (folder / "results.json").write_text(json.dumps(picks), encoding="utf-8")
    return picks


CUTOFF_RUNS = {  # run: (summary, test2016 BLEU, chrF, p against the baseline, p against R-Drop)
    "cutoff-a2-d0.1": (summary("--rdrop-alpha 2 --rdrop-cutoff 0.05", 31.5, kl=0.5), 33.0, 56.0,
                       0.04, 0.3),
    "simcut-a3-d0.1": (summary("--rdrop-alpha 3 --simcut", 30.25, kl=0.75), 31.5, 54.0, 0.02,
                       0.001),
}  # fmt: skip


def cutoff_work(work):
    """What experiment-multi30k-cutoff.sh leaves for the two runs of CUTOFF_RUNS."""
    for run, (figures, bleu, chrf, p_baseline, p_rdrop) in CUTOFF_RUNS.items():
        write_run(work / run, figures)
        row = {"bleu": bleu, "chrf": chrf, "n": 4}
        write_scores(work / f"{run}.test2016", row, p_value=p_baseline, **SIGNATURES)
        (work / f"{run}.test2016.vs-rdrop.json").write_text(
            json.dumps(dict(row, p_value=p_rdrop, **SIGNATURES))
        )
    return list(CUTOFF_RUNS)


def test_the_cutoff_report_sets_the_new_runs_beside_the_committed_picks(tmp_path):
    picks = committed_picks(tmp_path / "committed")
    work, out = tmp_path / "work", tmp_path / "out"
    runs = cutoff_work(work)
    report("cutoff", "--work", work, "--committed", tmp_path / "committed", "--out", out, *runs)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results) == ["systems", "signature", "chrf_signature", "machine", "commands"]
    source = f"committed ({tmp_path / 'committed'})"
    baseline, rdrop, cutoff, simcut = results["systems"]
    assert baseline == dict(
        picks["baseline"],
        system="baseline (label_smoothed_cross_entropy)",
        source=source,
        vs_baseline=None,
        vs_rdrop=None,
    )
    assert rdrop == dict(
        picks["rdrop"],
        system="R-Drop",
        source=source,
        vs_baseline={"delta_bleu": 1.25, "p_value": 0.0123},
        vs_rdrop=None,
    )
    assert cutoff == dict(
        CUTOFF_RUNS["cutoff-a2-d0.1"][0],
        run="cutoff-a2-d0.1",
        system="R-Drop + Cutoff",
        source="this run",
        bleu=33.0,
        chrf=56.0,
        n=4,
        vs_baseline={"delta_bleu": 1.0, "p_value": 0.04},
        vs_rdrop={"delta_bleu": -0.25, "p_value": 0.3},
    )
    assert simcut["system"] == "SimCut" and simcut["bleu"] == 31.5
    assert simcut["vs_baseline"] == {"delta_bleu": -0.5, "p_value": 0.02}
    assert simcut["vs_rdrop"] == {"delta_bleu": -1.75, "p_value": 0.001}
    assert results["commands"] == [
        "bash scripts/setup-venv.sh",
        "bash examples/translation/experiment-multi30k-cutoff.sh",
    ]
    assert (out / "results.md").read_text(encoding="utf-8") == (
        "| system | run | test2016 BLEU | chrF | vs baseline: ΔBLEU (p) | vs R-Drop: ΔBLEU (p) "
        "| best valid BLEU (epoch) | updates | wall time | train tokens/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        "| baseline (label_smoothed_cross_entropy) | baseline-d0.1 | 32.00 | 55.00 | — | — "
        "| 30.00 (2) | 200 | 10 min | 1000 |\n"
        "| R-Drop | rdrop-a2 | 33.25 | 55.50 | +1.25 (p = 0.0123) | — | 31.00 (2) | 200 "
        "| 10 min | 1000 |\n"
        "| R-Drop + Cutoff | cutoff-a2-d0.1 | 33.00 | 56.00 | +1.00 (p = 0.0400) "
        "| -0.25 (p = 0.3000) | 31.50 (2) | 200 | 10 min | 1000 |\n"
        "| SimCut | simcut-a3-d0.1 | 31.50 | 54.00 | -0.50 (p = 0.0200) | -1.75 (p = 0.0010) "
        "| 30.25 (2) | 200 | 10 min | 1000 |\n"
        "\n"
        "Options of the new runs (train-multi30k.sh, 20 epochs): cutoff-a2-d0.1: "
        "`--rdrop-alpha 2 --rdrop-cutoff 0.05`; simcut-a3-d0.1: `--rdrop-alpha 3 --simcut`\n"
        "(BLEU BLEU-sig; chrF chrF-sig; p: paired bootstrap against the committed test2016 "
        "hypotheses)\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png",
        "cutoff-a2-d0.1.test2016.hyp",
        "results.json",
        "results.md",
        "simcut-a3-d0.1.test2016.hyp",
    ]


def test_the_cutoff_report_refuses_two_scorings_of_a_run_that_disagree(tmp_path):
    committed_picks(tmp_path / "committed")
    work, out = tmp_path / "work", tmp_path / "out"
    run = cutoff_work(work)[0]
    rescored = work / f"{run}.test2016.vs-rdrop.json"
    rescored.write_text(json.dumps(dict(json.loads(rescored.read_text()), bleu=1.0)))
    with pytest.raises(SystemExit) as exit_info:
        report("cutoff", "--work", work, "--committed", tmp_path / "committed", "--out", out, run)
    assert str(exit_info.value).startswith("error: incomplete experiment")
    assert "disagree" in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert not out.exists()


def test_a_missing_hypothesis_file_stops_the_report_before_it_writes(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    multi30k_work(work)
    (work / "rdrop.test2016.hyp").unlink()
    with pytest.raises(SystemExit) as exit_info:
        report("multi30k", "--work", work, "--out", out)
    assert "rdrop.test2016.hyp" in str(exit_info.value) and not out.exists()


# -- the committed results, each against what it was made from or quotes --

GPU_RESULTS = ("multi30k-gpu", "multi30k-gpu-seed2", "multi30k-gpu-seed3")


@pytest.mark.parametrize(
    "name, markdown",
    [
        ("multi30k", experiment_report.markdown_multi30k),
        ("multi30k-cutoff", experiment_report.markdown_cutoff),
        *((name, experiment_report.markdown_gpu) for name in GPU_RESULTS),
    ],
)
def test_each_committed_table_is_the_markdown_of_its_json(name, markdown):
    folder, results = committed(name)
    assert markdown(results) == (folder / "results.md").read_text(encoding="utf-8")


def test_the_committed_picks_are_the_sweeps_best_valid_runs():
    _, results = committed("multi30k")
    for system in ("baseline", "rdrop"):
        pick = results[system]
        candidates = {r: s for r, s in results["sweep"].items() if r.startswith(system + "-")}
        assert len(candidates) >= 2
        assert all(s["best_valid_bleu"] <= pick["best_valid_bleu"] for s in candidates.values())
        assert {k: pick[k] for k in SUMMARY_KEYS} == candidates[pick["run"]]


def test_the_committed_cutoff_results_quote_the_committed_picks():
    _, picks = committed("multi30k")
    _, results = committed("multi30k-cutoff")
    baseline, rdrop, *new = results["systems"]
    for row, pick in ((baseline, picks["baseline"]), (rdrop, picks["rdrop"])):
        assert {k: row[k] for k in pick} == pick and row["source"].startswith("committed (")
    assert rdrop["vs_baseline"]["p_value"] == picks["p_value"]
    assert new and all(row["source"] == "this run" for row in new)
    for row in (rdrop, *new):
        delta = row["vs_baseline"]["delta_bleu"]
        assert delta == pytest.approx(row["bleu"] - picks["baseline"]["bleu"], abs=1e-12)
    for row in new:
        delta = row["vs_rdrop"]["delta_bleu"]
        assert delta == pytest.approx(row["bleu"] - picks["rdrop"]["bleu"], abs=1e-12)
    assert (results["signature"], results["chrf_signature"]) == (
        picks["signature"],
        picks["chrf_signature"],
    )


@pytest.mark.parametrize("name", GPU_RESULTS)
def test_the_committed_gpu_figures_are_those_of_the_committed_training_logs(name):
    folder, results = committed(name)
    systems = results["systems"]
    baseline = systems[results["baseline"]]
    assert list(systems)[0] == results["baseline"]
    for system, figures in systems.items():
        log = read_fairseq_log(folder / f"{system}.train.log")
        summarized = summarize_log(log)
        assert {k: figures[k] for k in summarized} == summarized, system
        assert figures["final_train_nll_loss"] == log["train"][-1]["nll_loss"]
        assert figures["final_valid_nll_loss"] == log["valid"][-1]["nll_loss"]
        assert len((folder / f"{system}.test2016.hyp").read_text().splitlines()) == figures["n"]
        if system != results["baseline"]:
            assert figures["delta_bleu"] == pytest.approx(figures["bleu"] - baseline["bleu"])
            assert figures["delta_chrf"] == pytest.approx(figures["chrf"] - baseline["chrf"])
    assert results["equal_updates"] == (len({s["updates"] for s in systems.values()}) == 1)
    assert results["data"]["test_sentences"] == baseline["n"]


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
