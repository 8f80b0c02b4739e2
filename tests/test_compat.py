"""The plugin on what users have installed, simulated here by monkeypatching the newer APIs away:
fairseq missing or too old (one line saying how to get one), fairseq 0.12.2's
``build_criterion(self, cfg)``, a torch without ``torch.serialization.safe_globals`` (loads with
the full unpickler, says so once, never blames the checkpoint); and where the one-line error hook
is installed (command lines only)."""

import argparse
import io
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from fairseq.tasks.fairseq_task import FairseqTask

import rdrop_fairseq  # noqa: F401  (registers the task and criterion)
from rdrop_fairseq import checkpoint_loading, compat, errors
from rdrop_fairseq.criterion import LabelSmoothedCrossEntropyRDropCriterion as RDrop
from rdrop_fairseq.errors import UsageError
from support.tiny_model import build

# -- fairseq present and new enough ----------------------------------------------------------------


def test_fairseq_missing_is_one_line_saying_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "fairseq", None)  # what import sees when it is not installed
    with pytest.raises(compat.FairseqUnavailable) as error:
        compat.check_fairseq()
    assert isinstance(error.value, ImportError) and isinstance(error.value, UsageError)
    line = str(error.value)
    assert "\n" not in line and "needs fairseq >= 0.12.2, which is not installed" in line
    assert "pip install 'rdrop-fairseq[fairseq]'" in line and "fairseq-fixed" in line


@pytest.mark.parametrize(
    "version, ok",
    [
        ("0.10.2", False),
        ("0.12.1", False),
        ("0.12.2", True),
        ("0.12.3", True),
        ("0.12.3.1", True),
        ("1.0.0a0", True),
    ],
)
def test_fairseq_version(monkeypatch, version, ok):
    monkeypatch.setitem(
        sys.modules, "fairseq", types.SimpleNamespace(__version__=version, __file__="x")
    )
    if ok:
        assert compat.check_fairseq() == version
    else:
        with pytest.raises(compat.FairseqUnavailable, match=rf"found {version} .*pip install"):
            compat.check_fairseq()


@pytest.mark.slow
def test_old_fairseq_on_the_command_line_is_one_error_line(tmp_path):
    """fairseq-train imports the plugin with --user-dir: one line, exit status 1."""
    fake = tmp_path / "fairseq"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '0.10.2'\n")
    cli = tmp_path / "fairseq-train"
    cli.write_text("import rdrop_fairseq\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(compat_root())]))
    proc = subprocess.run(
        [sys.executable, str(cli)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: rdrop-fairseq needs fairseq >= 0.12.2, found 0.10.2 ({fake / '__init__.py'}): "
        + compat.INSTALL_FAIRSEQ
    ]


def compat_root():
    return os.path.dirname(os.path.dirname(compat.__file__))


# -- fairseq 0.12.2's API -----------------------------------------------------------------------


def test_build_criterion_without_from_checkpoint(tmp_path, monkeypatch):
    """fairseq 0.12.2: ``FairseqTask.build_criterion(self, cfg)``."""
    calls = []
    modern = FairseqTask.build_criterion

    def build_criterion(self, cfg):  # fairseq 0.12.2's signature
        calls.append(cfg)
        return modern(self, cfg)

    monkeypatch.setattr(FairseqTask, "build_criterion", build_criterion)
    cfg, task, _, criterion = build(tmp_path, extra=["--rdrop-alpha", "5"])
    assert isinstance(criterion, RDrop) and len(calls) == 1
    assert isinstance(task.build_criterion(cfg.criterion, from_checkpoint=True), RDrop)


def test_build_criterion_passes_from_checkpoint_where_fairseq_takes_it(tmp_path, monkeypatch):
    seen = []
    modern = FairseqTask.build_criterion

    def build_criterion(self, cfg, from_checkpoint=False):
        seen.append(from_checkpoint)
        return modern(self, cfg, from_checkpoint)

    monkeypatch.setattr(FairseqTask, "build_criterion", build_criterion)
    cfg, task, _, _ = build(tmp_path, extra=["--rdrop-alpha", "5"])
    task.build_criterion(cfg.criterion, from_checkpoint=True)
    assert seen == [False, True]


# -- a torch without the allowlist API ----------------------------------------------------------


@pytest.fixture
def old_torch(monkeypatch):
    """torch as before 2.5: no safe_globals/get_safe_globals (and weights_only=False default)."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    monkeypatch.delattr(torch.serialization, "get_safe_globals")
    monkeypatch.delenv(checkpoint_loading.TRUST_CHECKPOINTS, raising=False)
    checkpoint_loading.safe_loading_works.cache_clear()
    yield
    checkpoint_loading.safe_loading_works.cache_clear()


def a_checkpoint():
    buffer = io.BytesIO()
    torch.save(
        {
            "model": {"w": torch.ones(2)},
            "args": argparse.Namespace(arch="transformer"),
            "extra_state": {"best": np.float64(1.5)},
        },
        buffer,
    )
    return buffer.getvalue()


def test_old_torch_loads_with_the_full_unpickler_and_never_blames_the_file(old_torch, tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    path.write_bytes(a_checkpoint())
    state = checkpoint_loading.load_checkpoint_file(str(path), map_location="cpu")
    assert torch.equal(state["model"]["w"], torch.ones(2)) and state["args"].arch == "transformer"
    path.write_bytes(b"")  # a damaged file is still explained as one
    with pytest.raises(UsageError, match=r"is empty$"):
        checkpoint_loading.load_checkpoint_file(str(path))


def test_old_torch_says_so_once_in_the_start_up_line(old_torch, monkeypatch, caplog):
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    for module in (checkpoint_utils, distributed_utils):
        monkeypatch.setattr(module, "torch", torch)  # as before the plugin was imported
    with caplog.at_level(logging.INFO, logger="rdrop_fairseq.checkpoint_loading"):
        assert checkpoint_loading.install() == [
            "fairseq.checkpoint_utils",
            "fairseq.distributed.utils",
        ]
        assert checkpoint_loading.install() == []
    lines = [r for r in caplog.records if r.name == "rdrop_fairseq.checkpoint_loading"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        f"checkpoint loading: full unpickler: torch {torch.__version__} cannot load with an "
        "allowlist (it has no torch.serialization.safe_globals; torch >= 2.6 can)"
    )


def test_current_torch_loads_safely():
    checkpoint_loading.safe_loading_works.cache_clear()
    assert checkpoint_loading.safe_loading_works()
    assert checkpoint_loading.policy().startswith("safe (weights_only with an allowlist")


# -- the one-line error hook --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv0, main_spec, expected",
    [
        ("/venv/bin/fairseq-train", None, True),
        ("/venv/bin/fairseq-hydra-train", None, True),
        ("/venv/bin/fairseq-generate", None, True),
        ("/venv/lib/site-packages/fairseq_cli/interactive.py", None, True),
        ("-c", "fairseq_cli.validate", True),
        ("-c", None, False),
        ("/home/me/my_program.py", None, False),
        ("/venv/bin/ipython", None, False),
    ],
)
def test_the_hook_is_for_fairseq_command_lines_only(monkeypatch, argv0, main_spec, expected):
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name=main_spec) if main_spec else None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [argv0, "data"])
    assert errors.run_by_fairseq_command_line() is expected


def test_install_excepthook_prints_one_line_and_leaves_other_hooks(monkeypatch, capsys):
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    assert errors.install_excepthook() and errors.install_excepthook()
    monkeypatch.delenv(errors.TRACEBACK, raising=False)
    sys.excepthook(UsageError, UsageError("bad flag"), None)
    assert capsys.readouterr().err == "error: bad flag\n"
    mine = lambda *args: None  # noqa: E731
    monkeypatch.setattr(sys, "excepthook", mine)
    assert not errors.install_excepthook() and sys.excepthook is mine
