"""fairseq's own command lines with the plugin, on the synthetic corpus: train with R-Drop,
resume, generate every test sentence, score with rdrop-evaluate, plot with rdrop-plot-logs."""

import json

import pytest

import rdrop_fairseq  # noqa: F401  (applies the fairseq fixes)
from rdrop_tools.training_logs import read_fairseq_log
from support import BIN, USER_DIR, run_cli
from support.tiny_model import TINY_TRANSFORMER as TINY


def train_args(data, save_dir, max_update, *extra):
    return [
        "fairseq-train",
        data,
        "--user-dir",
        USER_DIR,
        "--task",
        "rdrop_translation",
        "--criterion",
        "label_smoothed_cross_entropy_rdrop",
        "--rdrop-alpha",
        "5",
        "--label-smoothing",
        "0.1",
        *TINY,
        "--optimizer",
        "adam",
        "--lr",
        "3e-3",
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        "50",
        "--max-tokens",
        "1024",
        "--max-update",
        str(max_update),
        "--seed",
        "1",
        "--cpu",
        "--num-workers",
        "0",
        "--save-dir",
        save_dir,
        "--no-epoch-checkpoints",
        "--log-format",
        "json",
        "--log-interval",
        "10",
        *extra,
    ]


def json_records(text, key):
    records = []
    for line in text.splitlines():
        start = line.find("{")
        if start >= 0 and key in line:
            try:
                records.append(json.loads(line[start:]))
            except json.JSONDecodeError:
                pass
    return records


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """200 updates in two runs: 100, then resumed from checkpoint_last.pt up to 200."""
    save = tmp_path_factory.mktemp("checkpoints")
    first = run_cli(*train_args(data_bin, save, 100))
    second = run_cli(*train_args(data_bin, save, 200))
    return save, first.stdout + first.stderr, second.stdout + second.stderr


def test_training_logs_kl_and_the_loss_falls(trained):
    _, first, second = trained
    inner = json_records(first + second, '"kl_loss"')
    inner = [r for r in inner if "num_updates" in r]
    assert len(inner) >= 10
    assert all(float(r["kl_loss"]) > 0 for r in inner)
    assert float(inner[-1]["nll_loss"]) < float(inner[0]["nll_loss"]) - 1.0
    valid = [r for r in json_records(first + second, '"valid_nll_loss"')]
    assert valid and all("valid_kl_loss" not in r for r in valid)  # validation: no KL


def test_resume_continues_from_the_saved_update_count(trained):
    save, _, second = trained
    assert "Loaded checkpoint" in second and "@ 100 updates" in second
    updates = [
        int(r["num_updates"]) for r in json_records(second, '"num_updates"') if "num_updates" in r
    ]
    assert updates and min(updates) > 100 and max(updates) == 200
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == 200


@pytest.mark.parametrize("subset,n", [("test", 20), ("test1", 13)])
def test_generate_emits_every_sentence_and_scores(trained, data_bin, subset, n, tmp_path):
    save, _, _ = trained
    gen = run_cli(
        "fairseq-generate",
        data_bin,
        "--user-dir",
        USER_DIR,
        "--path",
        save / "checkpoint_best.pt",
        "--gen-subset",
        subset,
        "--beam",
        "2",
        "--batch-size",
        "8",
        "--cpu",
    )
    ids = sorted(
        int(line.split("\t")[0][2:]) for line in gen.stdout.splitlines() if line.startswith("H-")
    )
    assert ids == list(range(n))
    log = tmp_path / "gen.log"
    log.write_text(gen.stdout)
    scores = json.loads(run_cli(BIN / "rdrop-evaluate", "--generate-log", log, "--json").stdout)
    assert 0 <= scores["bleu"] <= 100 and scores["signature"].startswith("nrefs:1")


def test_plot_logs_reads_fairseq_json_logs(trained, tmp_path):
    _, first, second = trained
    log = tmp_path / "train.log"
    log.write_text(first + second)
    records = read_fairseq_log(str(log))
    assert [r["epoch"] for r in records["train"]] == sorted({r["epoch"] for r in records["train"]})
    assert records["train"][-1]["num_updates"] == 200
    assert all("kl_loss" in r for r in records["train"]) and records["valid"]
    assert all("kl_loss" not in r for r in records["valid"])
    out = tmp_path / "curves.png"
    plot_logs = BIN / "rdrop-plot-logs"
    run_cli(plot_logs, "--run", f"rdrop={log}", "--out", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli(plot_logs, "--run", f"x={tmp_path / 'none'}", "--out", out, check=False)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:")
