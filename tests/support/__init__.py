"""What the tests share: paths, the real corpora, running a command-line tool; the synthetic
corpus (corpus.py), the tiny Transformer (tiny_model.py) and the float64 loss reference
(loss_reference.py), fairseq-train runs (training.py) and a code-carrying pickle
(crafted.py) beside it. Tests import from here, never from one another or conftest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the real corpora, for the tests about real text (the recipes read the same variable)
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
USER_DIR = str(ROOT / "rdrop_fairseq")
BIN = Path(sys.executable).parent
#: the tests' multi-process launcher (support/launcher.py), as a command
LAUNCHER = [sys.executable, str(ROOT / "tests" / "support" / "launcher.py")]
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
