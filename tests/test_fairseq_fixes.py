"""The plugin's changes to fairseq (rdrop_fairseq/fairseq_fixes.py): each checked against the bug
in fairseq as installed, installed once, lazy (nothing probed at import), logged, and turned off
by RDROP_FAIRSEQ_NO_FIXES=1; importing the plugin leaves sys.excepthook alone."""

import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq.data import data_utils
from omegaconf import OmegaConf

import rdrop_fairseq  # noqa: F401  (installs the fixes)
from rdrop_fairseq import fairseq_fixes
from rdrop_fairseq.errors import UsageError
from support.training import as_in_a_new_process


def test_each_check_sees_the_bug_in_fairseq_as_installed_and_not_after_the_fix():
    assert fairseq_fixes._drops_last_batch(data_utils.batch_by_size.__wrapped__)
    assert not fairseq_fixes._drops_last_batch(data_utils.batch_by_size)
    assert fairseq_fixes.apply() == []  # installed once, at import


def test_last_batch_is_kept_when_not_a_multiple_of_required_size():
    sizes = np.full(13, 5)
    batches = data_utils.batch_by_size(
        np.arange(13), lambda i: sizes[i], max_tokens=40, required_batch_size_multiple=8
    )
    assert sorted(np.concatenate(batches).tolist()) == list(range(13))
    assert all(len(b) * 5 <= 40 for b in batches)


def precision_cfg(**common):
    flags = dict(
        bf16=False, fp16=False, memory_efficient_fp16=False, amp=False, cpu=True, tpu=False
    )
    flags.update(common)
    return OmegaConf.create({"common": flags, "distributed_training": {"tpu": flags["tpu"]}})


def test_bf16_turned_into_tpu_is_turned_back():
    """fairseq turns --bf16 into --tpu; without torch_xla the plugin clears the TPU flags."""
    cfg = precision_cfg(bf16=True, tpu=True)
    fairseq_fixes._check_precision(cfg)
    assert not cfg.common.tpu and not cfg.distributed_training.tpu and cfg.common.bf16


@pytest.mark.parametrize("flag", ["fp16", "memory_efficient_fp16", "amp"])
@pytest.mark.parametrize("cpu", [True, False])
def test_half_precision_without_cuda_is_one_line(flag, cpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = precision_cfg(cpu=cpu, **{flag: True})
    with pytest.raises(UsageError, match=rf"^--{flag.replace('_', '-')} trains on CUDA only"):
        fairseq_fixes._check_precision(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if not cpu:
        fairseq_fixes._check_precision(cfg)  # with CUDA: fine


class _FakeTrainer:
    """What the non-finite wrapper reads of fairseq's Trainer."""

    def __init__(self, error, fp16=False):
        self.error = error
        self.criterion = SimpleNamespace(rdrop_alpha=5.0)
        self.cfg = OmegaConf.create(
            {
                "optimization": {"lr": [0.25]},
                "checkpoint": {"save_dir": "ckpts"},
                "common": {"fp16": fp16, "memory_efficient_fp16": False, "amp": False},
            }
        )

    def get_num_updates(self):
        return 41

    def train_step(self, samples):
        raise self.error


def nan_detector_failure():
    """fairseq's NanDetector re-run failing in turn, with the FloatingPointError as context."""
    try:
        try:
            raise FloatingPointError("gradients are Nan/Inf")
        except FloatingPointError:
            raise StopIteration  # noqa: B904 (the context is what is tested)
    except StopIteration as e:
        return e


@pytest.mark.parametrize(
    "error, fp16",
    [
        (FloatingPointError("gradients are Nan/Inf"), False),
        (
            FloatingPointError(
                "Minimum loss scale reached (0.0001). Your loss is probably exploding."
            ),
            True,
        ),
        (nan_detector_failure(), False),
    ],
)
def test_non_finite_loss_is_one_line_naming_the_likely_causes(error, fp16):
    fake = _FakeTrainer(error, fp16)
    step = fairseq_fixes._non_finite_in_one_line(_FakeTrainer.train_step)
    with pytest.raises(UsageError) as raised:
        step(fake, [])
    line = str(raised.value)
    assert "\n" not in line and line.startswith("training stopped at update 42: ")
    assert "--rdrop-alpha 5 too large" in line and "--lr 0.25 too high" in line
    assert ("fp16 overflow" in line) == fp16
    assert "the checkpoints in ckpts are as they were" in line


def test_other_floating_point_errors_keep_their_traceback():
    fake = _FakeTrainer(
        FloatingPointError("Fatal error: gradients are inconsistent between workers.")
    )
    with pytest.raises(FloatingPointError, match="inconsistent"):
        fairseq_fixes._non_finite_in_one_line(_FakeTrainer.train_step)(fake, [])


IMPORT = """
import argparse, logging, sys, tempfile
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
created = []
real_mkdtemp = tempfile.mkdtemp
tempfile.mkdtemp = lambda *a, **k: created.append(a) or real_mkdtemp(*a, **k)
parsed = []
real_parse = argparse.ArgumentParser.parse_known_args
def parse(self, *a, **k):
    parsed.append(self.prog)
    return real_parse(self, *a, **k)
argparse.ArgumentParser.parse_known_args = parse
hook = sys.excepthook
import rdrop_fairseq
from rdrop_fairseq import fairseq_fixes
from fairseq import checkpoint_utils
from fairseq import checkpoint_utils
from fairseq.data import data_utils
print("temp files at import:", len(created))
print("parser parses at import:", len(parsed))
print("excepthook changed:", sys.excepthook is not hook)
print("again:", fairseq_fixes.apply())
print("batch_by_size replaced:", hasattr(data_utils.batch_by_size, "__wrapped__"))
print("loader installed:", hasattr(checkpoint_utils.torch, "_rdrop_checkpoint_loading"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("no_fixes", [False, True])
def test_import_is_lazy_logged_once_and_the_fixes_can_be_turned_off(no_fixes):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RDROP_FAIRSEQ_NO_FIXES", None)
    if no_fixes:
        env["RDROP_FAIRSEQ_NO_FIXES"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    logged = [
        line
        for line in out.splitlines()
        if line.startswith("rdrop_fairseq.fairseq_fixes changes to fairseq")
    ]
    assert "temp files at import: 0" in out and "parser parses at import: 0" in out
    assert "excepthook changed: False" in out  # a plain import: the user's program decides
    assert "again: []" in out
    assert f"batch_by_size replaced: {not no_fixes}" in out
    assert "loader installed: True" in out  # its own switch, not this one
    assert len(logged) == (0 if no_fixes else 1), out
    assert (
        sum(
            line.startswith("rdrop_fairseq.checkpoint_loading checkpoint loading: safe")
            for line in out.splitlines()
        )
        == 1
    )


#: fairseq-train where the plugin cannot be imported (so no fairseq in it has been changed)
WITHOUT_PLUGIN = """
import sys
sys.modules["rdrop_fairseq"] = None  # import rdrop_fairseq: ImportError
from fairseq_cli.train import cli_main
sys.argv[0] = "fairseq-train"
sys.exit(cli_main())
"""


@pytest.mark.slow
def test_training_batches_stay_fairseqs_so_stock_runs_train_bit_for_bit_as_without_the_plugin(
    data_bin, tmp_path
):
    """The last-batch fix is for evaluation: with the plugin on --user-dir, the stock task and
    criterion train exactly as without it, although fairseq drops their last training batch.
    Without the plugin: a fairseq-train process in which rdrop_fairseq cannot be imported; with
    it: fairseq-train's ``cli_main`` in this process, on one CPU thread as that process
    (OMP_NUM_THREADS=1; GEMM results depend on the thread count)."""
    from support import USER_DIR, run_cli
    from support.tiny_model import TINY_TRANSFORMER
    from support.training import fairseq_train, last_state

    batch, multiple = 45, 3
    train = data_utils.load_indexed_dataset(str(data_bin / "train.de-en.de"), None)

    def batches(batch_by_size):
        return len(
            batch_by_size(
                np.arange(len(train)),
                lambda i: 1,
                max_sentences=batch,
                required_batch_size_multiple=multiple,
            )
        )

    fairseqs = batches(data_utils.batch_by_size.__wrapped__)
    assert batches(data_utils.batch_by_size) == fairseqs + 1  # fairseq drops the last one here

    def args(save):
        return [
            data_bin,
            "--task",
            "translation",
            "--criterion",
            "label_smoothed_cross_entropy",
            "--label-smoothing",
            "0.1",
            "-s",
            "de",
            "-t",
            "en",
            *TINY_TRANSFORMER,
            "--optimizer",
            "adam",
            "--lr",
            "3e-3",
            "--batch-size",
            str(batch),
            "--required-batch-size-multiple",
            str(multiple),
            "--max-epoch",
            "1",
            "--seed",
            "3",
            "--num-workers",
            "0",
            "--cpu",
            "--save-dir",
            save,
            "--no-epoch-checkpoints",
            "--disable-validation",
        ]

    run_cli(sys.executable, "-c", WITHOUT_PLUGIN, *args(tmp_path / "stock"))
    with as_in_a_new_process():
        run = fairseq_train(*args(tmp_path / "plugin"), "--user-dir", USER_DIR)
    assert run.error is None, run.output[-3000:]
    stock, plugin = last_state(tmp_path / "stock"), last_state(tmp_path / "plugin")
    assert stock["optimizer_history"][-1]["num_updates"] == fairseqs
    assert plugin["optimizer_history"][-1]["num_updates"] == fairseqs
    assert stock["model"].keys() == plugin["model"].keys()
    assert all(torch.equal(stock["model"][k], plugin["model"][k]) for k in stock["model"])
