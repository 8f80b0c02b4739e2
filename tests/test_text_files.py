"""One input check for the text tools: check_parallel.py, text_pipeline.py and sentencepiece_joint.py
report the same problem with the same single line, exit with status 1 and write nothing."""

import sys

import pytest

from support import ROOT, run_cli

SCRIPTS = ROOT / "scripts"


def commands(folder):
    """Each tool reading folder/c.de (and folder/c.en where it reads a parallel pair)."""
    return {
        "check_parallel": ["check_parallel.py", folder, "c", "--langs", "de", "en"],
        "tokenize": ["text_pipeline.py", "tokenize", "--lang", "de", folder / "c.de", folder / "out" / "t"],
        "clean": ["text_pipeline.py", "clean", "--min-len", "1", "--max-len", "9", folder / "c", "de", "en",
                  folder / "out" / "k"],
        "spm_train": ["sentencepiece_joint.py", "train", "--model", folder / "out" / "spm",
                      "--vocab-size", "10", folder / "c.de", folder / "c.en"],
    }


def run_tool(script, *args):
    return run_cli(sys.executable, SCRIPTS / script, *args, check=False)


def assert_one_error(folder, tools, message):
    before = sorted(p.name for p in folder.iterdir())
    for name in tools:
        result = run_tool(*commands(folder)[name])
        assert (name, result.returncode, result.stderr) == (name, 1, f"error: {message}\n")
        assert sorted(p.name for p in folder.iterdir()) == before, name


def test_missing_file(tmp_path):
    (tmp_path / "c.en").write_text("a\n", encoding="utf-8")
    assert_one_error(tmp_path, ["check_parallel", "tokenize", "clean", "spm_train"],
                     f"no such file: {tmp_path / 'c.de'}")


def test_invalid_utf8(tmp_path):
    (tmp_path / "c.de").write_bytes(b"gut\ncaf\xe9\n")
    (tmp_path / "c.en").write_text("good\ncafe\n", encoding="utf-8")
    assert_one_error(tmp_path, ["check_parallel", "tokenize", "clean", "spm_train"],
                     f"{tmp_path / 'c.de'}: line 2 is not valid UTF-8 (invalid continuation byte)")


@pytest.mark.parametrize("extra", ["c.de", "c.en"])
def test_different_line_counts(tmp_path, extra):
    for lang in ("de", "en"):
        (tmp_path / f"c.{lang}").write_text("a b\nc d\n", encoding="utf-8")
    with open(tmp_path / extra, "a", encoding="utf-8") as f:
        f.write("e f\n")
    counts = {"c.de": 2, "c.en": 2, extra: 3}
    assert_one_error(tmp_path, ["check_parallel", "clean"], "parallel files have different line counts ("
                     + ", ".join(f"{tmp_path / name}: {n}" for name, n in counts.items()) + ")")


def test_encode_decode_round_trip(tmp_path):
    """The tools accept what they check: a model learned on good text encodes and decodes it."""
    text = ["ein kleiner test", "noch ein satz", "und ein dritter"] * 20
    for lang in ("de", "en"):
        (tmp_path / f"c.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    assert run_tool("check_parallel.py", tmp_path, "c", "--langs", "de", "en").returncode == 0
    too_large = run_tool("sentencepiece_joint.py", "train", "--model", tmp_path / "spm",
                         "--vocab-size", "1000", tmp_path / "c.de", tmp_path / "c.en")
    assert too_large.returncode == 1 and too_large.stderr.count("\n") == 1
    assert too_large.stderr.startswith("error: sentencepiece cannot train on ")
    assert "Vocabulary size too high (1000)" in too_large.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.de", "c.en"]
    run_cli(sys.executable, SCRIPTS / "sentencepiece_joint.py", "train", "--model", tmp_path / "spm",
            "--vocab-size", "20", tmp_path / "c.de", tmp_path / "c.en")
    for command, src, dst in (("encode", "c.de", "sp.de"), ("decode", "sp.de", "back.de")):
        run_cli(sys.executable, SCRIPTS / "sentencepiece_joint.py", command, "--model",
                tmp_path / "spm.model", "--input", tmp_path / src, "--output", tmp_path / dst)
    assert (tmp_path / "sp.de").read_text(encoding="utf-8").splitlines()[0].startswith("\u2581")
    assert (tmp_path / "back.de").read_text(encoding="utf-8").splitlines() == text
