"""fairseq's own command lines with the plugin, on the synthetic corpus: train with R-Drop,
resume, generate every test sentence, score with rdrop-evaluate, plot with rdrop-plot-logs.

Training is one fairseq-train command (20 updates), resumed in this process up to 40 updates
(tests/support/training.py: fairseq-train's own code, without starting Python again)."""

import contextlib
import io
import json
import logging

import numpy as np
import pytest
import torch

import rdrop_fairseq  # noqa: F401  (applies the fairseq fixes)
from rdrop_tools import evaluate as evaluate_tool
from rdrop_tools import plot_logs
from rdrop_tools.training_logs import read_fairseq_log
from support import BIN, USER_DIR, run_cli
from support.tiny_model import TINY_TRANSFORMER as TINY
from support.training import fairseq_train

FIRST, LAST = 20, 40  # updates: the command line's, then the resumed run's


def train_args(data, save_dir, max_update, *extra):
    return [
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
        "2",
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


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as the commands run_cli starts (a multi-threaded tiny model crawls
    when the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate_in_process(*args):
    """fairseq-generate, with the plugin, in this process on one thread: what it prints. The
    random generators and the root logger are left as they were."""
    from fairseq import options
    from fairseq_cli import generate

    parser = options.get_generation_parser()
    parser.add_argument("--arch", "-a", default="wav2vec2")  # as fairseq-generate's cli_main
    cfg = options.parse_args_and_arch(parser, [str(a) for a in args])
    root, text = logging.getLogger(), io.StringIO()
    handlers, level, numpy_state = list(root.handlers), root.level, np.random.get_state()
    try:
        with one_thread(), torch.random.fork_rng(), contextlib.redirect_stdout(text):
            generate.main(cfg)
    finally:
        np.random.set_state(numpy_state)
        for handler in set(root.handlers) - set(handlers):  # its logging.basicConfig
            root.removeHandler(handler)
        root.setLevel(level)
    return text.getvalue()


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    """40 updates in two runs: 20 by the fairseq-train command, then resumed from
    checkpoint_last.pt up to 40 (in this process)."""
    save = tmp_path_factory.mktemp("checkpoints")
    first = run_cli(BIN / "fairseq-train", *train_args(data_bin, save, FIRST))
    with one_thread():
        second = fairseq_train(*train_args(data_bin, save, LAST))
    assert second.error is None, second.output[-3000:]
    return save, first.stdout + first.stderr, second.output


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
    assert "Loaded checkpoint" in second and f"@ {FIRST} updates" in second
    updates = [
        int(r["num_updates"]) for r in json_records(second, '"num_updates"') if "num_updates" in r
    ]
    assert updates and min(updates) > FIRST and max(updates) == LAST
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == LAST


GENERATE = ["--beam", "2", "--batch-size", "8", "--cpu"]


@pytest.mark.parametrize("subset,n,command", [("test", 20, False), ("test1", 13, True)])
def test_generate_emits_every_sentence_and_scores(
    trained, data_bin, subset, n, command, tmp_path, capsys
):
    """Neither 20 nor 13 is a multiple of --required-batch-size-multiple (8): the last batch is
    kept. test1 through the fairseq-generate command, test in this process."""
    save, _, _ = trained
    args = [data_bin, "--user-dir", USER_DIR, "--path", save / "checkpoint_best.pt"]
    args += ["--gen-subset", subset, *GENERATE]
    if command:
        output = run_cli(BIN / "fairseq-generate", *args).stdout
    else:  # no data-loading worker process: one left to the garbage collector costs 5 s
        output = generate_in_process(*args, "--num-workers", "0")
    ids = sorted(
        int(line.split("\t")[0][2:]) for line in output.splitlines() if line.startswith("H-")
    )
    assert ids == list(range(n))
    log = tmp_path / "gen.log"
    log.write_text(output)
    capsys.readouterr()
    evaluate_tool.main(["--generate-log", str(log), "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["bleu"] <= 100 and scores["signature"].startswith("nrefs:1")
    assert scores["n"] == n


def test_plot_logs_reads_fairseq_json_logs(trained, tmp_path):
    _, first, second = trained
    log = tmp_path / "train.log"
    log.write_text(first + second)
    records = read_fairseq_log(str(log))
    assert [r["epoch"] for r in records["train"]] == sorted({r["epoch"] for r in records["train"]})
    assert records["train"][-1]["num_updates"] == LAST
    assert all("kl_loss" in r for r in records["train"]) and records["valid"]
    assert all("kl_loss" not in r for r in records["valid"])
    out = tmp_path / "curves.png"
    run_cli(BIN / "rdrop-plot-logs", "--run", f"rdrop={log}", "--out", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as exit_info:
        plot_logs.main(["--run", f"x={tmp_path / 'none'}", "--out", str(tmp_path / "no.png")])
    assert str(exit_info.value.code).startswith("error:") and not (tmp_path / "no.png").exists()
