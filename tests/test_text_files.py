"""One input check for the text tools: rdrop-check-parallel, rdrop-text-pipeline and
rdrop-sentencepiece report the same problem with the same single line, exit with status 1 and
write nothing."""

import io
import sys

import pytest

from rdrop_tools import check_parallel
from support import BIN, run_cli


def commands(folder):
    """Each tool reading folder/c.de (and folder/c.en where it reads a parallel pair)."""
    return {
        "check_parallel": ["rdrop-check-parallel", folder, "c", "--langs", "de", "en"],
        "tokenize": [
            "rdrop-text-pipeline",
            "tokenize",
            "--lang",
            "de",
            folder / "c.de",
            folder / "out" / "t",
        ],
        "clean": [
            "rdrop-text-pipeline",
            "clean",
            "--min-len",
            "1",
            "--max-len",
            "9",
            folder / "c",
            "de",
            "en",
            folder / "out" / "k",
        ],
        "spm_train": [
            "rdrop-sentencepiece",
            "train",
            "--model",
            folder / "out" / "spm",
            "--vocab-size",
            "10",
            folder / "c.de",
            folder / "c.en",
        ],
    }


def run_tool(command, *args):
    return run_cli(BIN / command, *args, check=False)


def assert_one_error(folder, tools, message):
    before = sorted(p.name for p in folder.iterdir())
    for name in tools:
        result = run_tool(*commands(folder)[name])
        assert (name, result.returncode, result.stderr) == (name, 1, f"error: {message}\n")
        assert sorted(p.name for p in folder.iterdir()) == before, name


@pytest.mark.slow
def test_missing_file(tmp_path):
    (tmp_path / "c.en").write_text("a\n", encoding="utf-8")
    assert_one_error(
        tmp_path,
        ["check_parallel", "tokenize", "clean", "spm_train"],
        f"no such file: {tmp_path / 'c.de'}",
    )


@pytest.mark.slow
def test_invalid_utf8(tmp_path):
    (tmp_path / "c.de").write_bytes(b"gut\ncaf\xe9\n")
    (tmp_path / "c.en").write_text("good\ncafe\n", encoding="utf-8")
    assert_one_error(
        tmp_path,
        ["check_parallel", "tokenize", "clean", "spm_train"],
        f"{tmp_path / 'c.de'}: line 2 is not valid UTF-8 (invalid continuation byte)",
    )


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["c.de", "c.en"])
def test_different_line_counts(tmp_path, extra):
    for lang in ("de", "en"):
        (tmp_path / f"c.{lang}").write_text("a b\nc d\n", encoding="utf-8")
    with open(tmp_path / extra, "a", encoding="utf-8") as f:
        f.write("e f\n")
    counts = {"c.de": 2, "c.en": 2, extra: 3}
    assert_one_error(
        tmp_path,
        ["check_parallel", "clean"],
        "parallel files have different line counts ("
        + ", ".join(f"{tmp_path / name}: {n}" for name, n in counts.items())
        + ")",
    )


@pytest.mark.slow
def test_encode_decode_round_trip(tmp_path):
    """The tools accept what they check: a model learned on good text encodes and decodes it."""
    text = ["ein kleiner test", "noch ein satz", "und ein dritter"] * 20
    for lang in ("de", "en"):
        (tmp_path / f"c.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    assert run_tool("rdrop-check-parallel", tmp_path, "c", "--langs", "de", "en").returncode == 0
    too_large = run_tool(
        "rdrop-sentencepiece",
        "train",
        "--model",
        tmp_path / "spm",
        "--vocab-size",
        "1000",
        tmp_path / "c.de",
        tmp_path / "c.en",
    )
    assert too_large.returncode == 1 and too_large.stderr.count("\n") == 1
    assert too_large.stderr.startswith("error: sentencepiece cannot train on ")
    assert "Vocabulary size too high (1000)" in too_large.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.de", "c.en"]
    run_cli(
        BIN / "rdrop-sentencepiece",
        "train",
        "--model",
        tmp_path / "spm",
        "--vocab-size",
        "20",
        tmp_path / "c.de",
        tmp_path / "c.en",
    )
    for command, src, dst in (("encode", "c.de", "sp.de"), ("decode", "sp.de", "back.de")):
        run_cli(
            BIN / "rdrop-sentencepiece",
            command,
            "--model",
            tmp_path / "spm.model",
            "--input",
            tmp_path / src,
            "--output",
            tmp_path / dst,
        )
    assert (tmp_path / "sp.de").read_text(encoding="utf-8").splitlines()[0].startswith("\u2581")
    assert (tmp_path / "back.de").read_text(encoding="utf-8").splitlines() == text


def lone_cr_corpus(folder):
    """c.de and c.en, 3 lines each as the perl scripts count them; c.de's second line holds a
    carriage return that fairseq reads as a line break (c.en's CRLF line ends are fine)."""
    (folder / "c.de").write_bytes(b"eins\nzwei\rdrei\nvier\n")
    (folder / "c.en").write_bytes(b"one\r\ntwo three\r\nfour\r\n")


LONE_CR = (
    "{}: line 2 holds a carriage return (CR) that fairseq reads as a line break: "
    "remove it (e.g. tr -d '\\r')"
)


def test_a_lone_carriage_return_is_refused(tmp_path, capsys):
    lone_cr_corpus(tmp_path)
    with pytest.raises(SystemExit) as exit:
        check_parallel.main([str(tmp_path), "c", "--langs", "de", "en"])
    assert exit.value.code == "error: " + LONE_CR.format(tmp_path / "c.de")
    (tmp_path / "c.de").write_bytes(b"eins\r\nzwei drei\nvier\r")  # CRLF and a last CR: fine
    check_parallel.main([str(tmp_path), "c", "--langs", "de", "en"])


@pytest.mark.slow
def test_a_lone_carriage_return_is_one_error_line(tmp_path):
    lone_cr_corpus(tmp_path)
    assert_one_error(tmp_path, ["check_parallel"], LONE_CR.format(tmp_path / "c.de"))


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_on_a_terminal_only(tmp_path, monkeypatch, terminal):
    """Long runs show the lines done and the rate on a terminal; a log stays quiet."""
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    (tmp_path / "c.de").write_text("a\n" * 1000, encoding="utf-8")
    (tmp_path / "c.en").write_text("b\n" * 1000, encoding="utf-8")
    check_parallel.main([str(tmp_path), "c", "--langs", "de", "en"])
    shown = stderr.getvalue()
    if terminal:
        assert "c.de: 1.00k lines [" in shown and " lines/s]" in shown, shown
        assert "c.en: 1.00k lines [" in shown, shown
    else:
        assert shown == ""
