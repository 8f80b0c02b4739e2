"""The experiment reports: the figures they take from fairseq's json logs
(rdrop_tools/training_logs.py) and the Cutoff / SimCut table (scripts/multi30k_cutoff_report.py)."""

import json
import sys

from support import ROOT, run_cli

from rdrop_tools.training_logs import summarize_run, total_wall_s


def write_run(run_dir, valid_bleus, options="--rdrop-alpha 2 --dropout 0.1"):
    """A finished training folder: a json train.log with one train and one valid record an epoch
    (263 updates and 105 s an epoch), and the options in .done."""
    lines = []
    for epoch, bleu in enumerate(valid_bleus, 1):
        updates = 263 * epoch
        lines.append("2026-11-26 | INFO | train | " + json.dumps(
            {"epoch": epoch, "train_loss": "5.1", "train_nll_loss": "3.2", "train_kl_loss": "0.4",
             "train_wps": str(1600 + epoch), "train_num_updates": str(updates),
             "train_wall": str(105.0 * epoch)}))
        lines.append("2026-11-26 | INFO | valid on 'valid' subset | " + json.dumps(
            {"epoch": epoch, "valid_loss": "4.8", "valid_nll_loss": "3.5", "valid_bleu": str(bleu),
             "valid_num_updates": str(updates)}))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.log").write_text("\n".join(lines) + "\n")
    (run_dir / ".done").write_text(options + "\n")


def test_wall_time_adds_up_the_segments_of_a_resumed_run():
    # fairseq's wall clock restarts at 0 after each resume (here after epochs 2 and 3)
    walls = [100.0, 210.0, 90.0, 60.0, 130.0]
    records = [{"epoch": e + 1, "wall": w} for e, w in enumerate(walls)]
    assert total_wall_s(records) == 210.0 + 90.0 + 130.0
    assert total_wall_s(records[:2]) == 210.0  # never resumed: the last figure


def test_a_run_is_summarized_from_its_json_log_and_options(tmp_path):
    write_run(tmp_path, [20.0, 31.5, 30.2])
    summary, log = summarize_run(tmp_path)
    assert summary == {
        "options": "--rdrop-alpha 2 --dropout 0.1", "epochs": 3, "updates": 789,
        "wall_s": 315.0, "median_train_wps": 1602.0, "best_valid_bleu": 31.5, "best_epoch": 2,
        "final_train_kl_loss": 0.4,
    }
    assert [r["bleu"] for r in log["valid"]] == [20.0, 31.5, 30.2]


def committed_results(folder, baseline_bleu, rdrop_bleu, p_value):
    folder.mkdir()
    row = {"options": "", "epochs": 20, "updates": 5260, "wall_s": 2940.0,
           "median_train_wps": 3186.0, "best_valid_bleu": 37.5, "best_epoch": 18, "n": 1000}
    results = {
        "baseline": dict(row, run="baseline-d0.1", bleu=baseline_bleu, chrf=58.0),
        "rdrop": dict(row, run="rdrop-a2-d0.1", bleu=rdrop_bleu, chrf=58.6),
        "p_value": p_value, "signature": "BLEU-sig", "chrf_signature": "chrF-sig",
    }
    (folder / "results.json").write_text(json.dumps(results))


def scored_run(work, run, bleu, p_vs_baseline, p_vs_rdrop, rescored_bleu=None):
    write_run(work / run, [30.0, 33.0 + bleu / 100])
    (work / f"{run}.test2016.hyp").write_text(f"a hypothesis of {run}\n")
    test = {"bleu": bleu, "chrf": 59.0, "n": 1000, "signature": "BLEU-sig",
            "chrf_signature": "chrF-sig"}
    (work / f"{run}.test2016.json").write_text(json.dumps(dict(test, p_value=p_vs_baseline)))
    rescored = dict(test, bleu=rescored_bleu or bleu, p_value=p_vs_rdrop)
    (work / f"{run}.test2016.vs-rdrop.json").write_text(json.dumps(rescored))


REPORT = ROOT / "scripts" / "multi30k_cutoff_report.py"


def test_the_cutoff_report_compares_each_run_with_the_committed_picks(tmp_path):
    committed_results(tmp_path / "committed", 38.15, 39.06, 0.019)
    work, out = tmp_path / "work", tmp_path / "out"
    scored_run(work, "cutoff-a2-d0.1", 39.5, 0.002, 0.21)
    scored_run(work, "simcut-a3-d0.1", 38.0, 0.6, 0.01)
    run_cli(sys.executable, REPORT, "--work", work, "--committed", tmp_path / "committed",
            "--out", out, "cutoff-a2-d0.1", "simcut-a3-d0.1")
    results = json.loads((out / "results.json").read_text())
    systems = {s["system"]: s for s in results["systems"]}
    assert list(systems) == ["baseline (label_smoothed_cross_entropy)", "R-Drop",
                             "R-Drop + Cutoff", "SimCut"]
    assert systems["R-Drop"]["vs_baseline"]["p_value"] == 0.019
    cutoff, simcut = systems["R-Drop + Cutoff"], systems["SimCut"]
    assert abs(cutoff["vs_baseline"]["delta_bleu"] - (39.5 - 38.15)) < 1e-9
    assert abs(cutoff["vs_rdrop"]["delta_bleu"] - (39.5 - 39.06)) < 1e-9
    assert (cutoff["vs_baseline"]["p_value"], cutoff["vs_rdrop"]["p_value"]) == (0.002, 0.21)
    assert (simcut["vs_baseline"]["p_value"], simcut["vs_rdrop"]["p_value"]) == (0.6, 0.01)
    assert simcut["best_valid_bleu"] == 33.38 and simcut["best_epoch"] == 2
    table = (out / "results.md").read_text()
    assert "| SimCut | simcut-a3-d0.1 | 38.00 |" in table and "-1.06 (p = 0.0100)" in table
    for run in ("cutoff-a2-d0.1", "simcut-a3-d0.1"):
        assert (out / f"{run}.test2016.hyp").read_text() == f"a hypothesis of {run}\n"
    assert (out / "curves.png").stat().st_size > 0


def test_the_cutoff_report_refuses_two_scorings_of_a_run_that_disagree(tmp_path):
    committed_results(tmp_path / "committed", 38.15, 39.06, 0.019)
    work, out = tmp_path / "work", tmp_path / "out"
    scored_run(work, "cutoff-a2-d0.1", 39.5, 0.002, 0.21, rescored_bleu=39.4)
    proc = run_cli(sys.executable, REPORT, "--work", work, "--committed", tmp_path / "committed",
                   "--out", out, "cutoff-a2-d0.1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: incomplete experiment")
    assert "disagree" in proc.stderr and not out.exists()
