import os
from types import SimpleNamespace

import pytest
import torch

# Triton decides when it is imported whether kernels are compiled or interpreted. Without a GPU
# they can only be interpreted, so the whole session interprets them (tests/test_triton_loss.py);
# with one, the tests marked ``cuda`` run them compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: one thread per worker, as many as cores
    torch.set_num_threads(1)


from support import BIN, NO_SHARED_DATA, SHARED_DATA, run_cli  # noqa: E402
from support import corpus as synthetic_corpus  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs command-line tools or trains (deselect with -m 'not slow')"
    )
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU; scripts/device/gpu-check.sh runs them (-m cuda)"
    )


def pytest_collection_modifyitems(items):
    """A test that uses the binarized corpus runs fairseq's command-line tools: slow."""
    for item in items:
        if {"corpus", "data_bin"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def skip_reason(report):
    """Why a test was skipped, the same words for every test skipped for the same reason."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ").strip()
    return f"{SHARED_DATA} not present" if NO_SHARED_DATA in reason else reason


def pytest_terminal_summary(terminalreporter):
    """One line counting the skipped tests by reason, most frequent first."""
    counts = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = skip_reason(report)
        counts[reason] = counts.get(reason, 0) + 1
    if counts:
        parts = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        terminalreporter.write_line(
            "skipped, by reason: " + "; ".join(f"{n} x {reason}" for reason, n in parts)
        )


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The synthetic corpus of support/corpus.py, written and binarized once per session:
    raw/{train,valid,test}.{de,en} (1 000, 20, 20 pairs), raw/tok/ (tokenized, lowercased), and
    bin/, the tokenized text binarized with a joined dictionary; its test1 subset is the first
    13 test sentences, a number that is not a multiple of --required-batch-size-multiple (8)."""
    root = tmp_path_factory.mktemp("synthetic-corpus")
    pairs = synthetic_corpus.write(root / "raw")
    tok = root / "raw" / "tok"
    for lang in ("de", "en"):
        lines = (tok / f"test.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        (tok / f"test13.{lang}").write_text("".join(lines[:13]), encoding="utf-8")
    run_cli(
        BIN / "fairseq-preprocess",
        "--source-lang",
        "de",
        "--target-lang",
        "en",
        "--trainpref",
        tok / "train",
        "--validpref",
        tok / "valid",
        "--testpref",
        f"{tok / 'test'},{tok / 'test13'}",
        "--joined-dictionary",
        "--destdir",
        root / "bin",
        "--workers",
        "1",
    )
    return SimpleNamespace(raw=root / "raw", tok=tok, bin=root / "bin", pairs=pairs)


@pytest.fixture(scope="session")
def data_bin(corpus):
    """The binarized synthetic corpus (train, valid, test, test1)."""
    return corpus.bin
