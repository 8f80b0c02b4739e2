"""fairseq's own command lines with the plugin, on the synthetic corpus: train with R-Drop,
resume, generate every test sentence, score with sacreBLEU; plus the CLI's bad-input errors."""

import json
import sys

import numpy as np
import pytest
from fairseq.data import data_utils

import rdrop_fairseq  # noqa: F401  (applies the fairseq fixes)
from support import ROOT, USER_DIR, run_cli

TINY = [
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]


def train_args(data, save_dir, max_update, *extra):
    return [
        "fairseq-train", data, "--user-dir", USER_DIR, "--task", "rdrop_translation",
        "--criterion", "label_smoothed_cross_entropy_rdrop", "--rdrop-alpha", "5",
        "--label-smoothing", "0.1", *TINY, "--dropout", "0.3",
        "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "50", "--max-tokens", "1024", "--max-update", str(max_update),
        "--seed", "1", "--cpu", "--num-workers", "0", "--save-dir", save_dir,
        "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "10", *extra,
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
    updates = [int(r["num_updates"]) for r in json_records(second, '"num_updates"')
               if "num_updates" in r]
    assert updates and min(updates) > 100 and max(updates) == 200
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == 200


@pytest.mark.parametrize("subset,n", [("test", 20), ("test1", 13)])
def test_generate_emits_every_sentence_and_scores(trained, data_bin, subset, n, tmp_path):
    save, _, _ = trained
    gen = run_cli(
        "fairseq-generate", data_bin, "--user-dir", USER_DIR, "--path", save / "checkpoint_best.pt",
        "--gen-subset", subset, "--beam", "2", "--batch-size", "8", "--cpu",
    )
    ids = sorted(int(line.split("\t")[0][2:]) for line in gen.stdout.splitlines()
                 if line.startswith("H-"))
    assert ids == list(range(n))
    log = tmp_path / "gen.log"
    log.write_text(gen.stdout)
    scores = json.loads(run_cli(sys.executable, ROOT / "scripts" / "evaluate.py",
                                "--generate-log", log, "--json").stdout)
    assert 0 <= scores["bleu"] <= 100 and scores["signature"].startswith("nrefs:1")


def test_last_batch_is_kept_when_not_a_multiple_of_required_size():
    sizes = np.full(13, 5)
    batches = data_utils.batch_by_size(
        np.arange(13), lambda i: sizes[i], max_tokens=40, required_batch_size_multiple=8
    )
    assert sorted(np.concatenate(batches).tolist()) == list(range(13))
    assert all(len(b) * 5 <= 40 for b in batches)


def test_negative_alpha_fails_with_one_clear_line(data_bin, tmp_path):
    proc = run_cli(*train_args(data_bin, tmp_path, 1, "--rdrop-alpha", "-1"), check=False)
    assert proc.returncode != 0
    assert "--rdrop-alpha" in proc.stderr.strip().splitlines()[-1]


def test_missing_data_directory_fails_with_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-dir"
    proc = run_cli(*train_args(missing, tmp_path / "ck", 1), check=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr.strip().splitlines()[-1]


def test_plot_logs_reads_fairseq_json_logs(trained, tmp_path):
    _, first, second = trained
    log = tmp_path / "train.log"
    log.write_text(first + second)
    sys.path.insert(0, str(ROOT / "scripts"))
    from plot_logs import read_fairseq_log

    records = read_fairseq_log(str(log))
    assert [r["epoch"] for r in records["train"]] == sorted({r["epoch"] for r in records["train"]})
    assert records["train"][-1]["num_updates"] == 200
    assert all("kl_loss" in r for r in records["train"]) and records["valid"]
    assert all("kl_loss" not in r for r in records["valid"])
    out = tmp_path / "curves.png"
    run_cli(sys.executable, ROOT / "scripts" / "plot_logs.py", "--run", f"rdrop={log}",
            "--out", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli(sys.executable, ROOT / "scripts" / "plot_logs.py", "--run", f"x={tmp_path / 'none'}",
                  "--out", out, check=False)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:")
