import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Triton decides when it is imported whether kernels are compiled or interpreted. Without a GPU
# they can only be interpreted, so the whole session interprets them (tests/test_triton_loss.py);
# with one, tests/test_cuda_loss.py runs them compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
# the real corpora, for the tests about real text (the recipes read the same variable)
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
USER_DIR = str(ROOT / "rdrop_fairseq")
BIN = Path(sys.executable).parent
NO_SHARED_DATA = "shared data not present"


def shared(name):
    """The real corpus SHARED_DATA/name; skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{NO_SHARED_DATA}: {path} (set SHARED_DATA to its folder)")
    return path


def run_cli(*args, check=True, env=None, timeout=900):
    """Run a command with the test interpreter's bin/ on PATH, one thread per process (a
    multi-threaded tiny model crawls when the CPU is shared); return the CompletedProcess."""
    full_env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    full_env.update(env or {})
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args[0]} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-5000:]}"
        )
    return proc


def pytest_terminal_summary(terminalreporter):
    """One line, when tests skipped because the real corpora are not there: how many."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and NO_SHARED_DATA in r.longrepr[2]]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests skipped: {SHARED_DATA} not present")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The synthetic corpus of synthetic_corpus.py, written and binarized once per session:
    raw/{train,valid,test}.{de,en} (1 000, 20, 20 pairs), raw/tok/ (tokenized, lowercased), and
    bin/, the tokenized text binarized with a joined dictionary; its test1 subset is the first
    13 test sentences, a number that is not a multiple of --required-batch-size-multiple (8)."""
    root = tmp_path_factory.mktemp("synthetic-corpus")
    pairs = synthetic_corpus.write(root / "raw")
    tok = root / "raw" / "tok"
    for lang in ("de", "en"):
        lines = (tok / f"test.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        (tok / f"test13.{lang}").write_text("".join(lines[:13]), encoding="utf-8")
    run_cli(BIN / "fairseq-preprocess", "--source-lang", "de", "--target-lang", "en",
            "--trainpref", tok / "train", "--validpref", tok / "valid",
            "--testpref", f"{tok / 'test'},{tok / 'test13'}", "--joined-dictionary",
            "--destdir", root / "bin", "--workers", "1")
    return SimpleNamespace(raw=root / "raw", tok=tok, bin=root / "bin", pairs=pairs)


@pytest.fixture(scope="session")
def data_bin(corpus):
    """The binarized synthetic corpus (train, valid, test, test1)."""
    return corpus.bin
