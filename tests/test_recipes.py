"""prepare-iwslt14.sh and prepare-wmt14en2de.sh on the shared partial data: prepare -> binarize."""

import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, run_cli, shared

RECIPES = ROOT / "examples" / "translation"
IWSLT = SHARED_DATA / "iwslt14-de-en"
WMT = SHARED_DATA / "wmt14-en-de"
IWSLT_TESTS = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011"]


def run_recipe(name, *args):
    return run_cli("bash", RECIPES / name, *args, check=False, env={"PYTHON": sys.executable})


def lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def assert_binarized(out, src, tgt):
    assert (out / ".complete").exists()
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            assert (out / f"{split}.{src}-{tgt}.{lang}.bin").stat().st_size > 0
    for lang in (src, tgt):
        subwords = lines(out / f"test.{lang}")
        assert len(subwords) == len(lines(out / "tmp" / f"test.{lang}"))
        assert subwords[0].startswith("\u2581")
    assert lines(out / f"dict.{src}.txt") == lines(out / f"dict.{tgt}.txt")  # joined dictionary
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".")] == []


@pytest.fixture
def iwslt_orig(tmp_path):
    """An IWSLT14 orig/ folder: the four real dev/test XML files; train.tags and tst2012 made from
    the TED toy corpus (the real ones are not available offline)."""
    shared("iwslt14-de-en"), shared("ted-toy-de-en")
    orig = tmp_path / "orig"
    orig.mkdir()
    for name in IWSLT_TESTS:
        for lang in ("de", "en"):
            (orig / f"{name}.de-en.{lang}.xml").symlink_to(IWSLT / "orig" / f"{name}.de-en.{lang}.xml")
    for lang in ("de", "en"):
        toy = lines(SHARED_DATA / "ted-toy-de-en" / f"train.{lang}")
        header = ["<url>http://www.ted.com/talks/a.html</url>", "<keywords>talks</keywords>",
                  "<talkid>1</talkid>", f"<title>Title {lang}</title>", f"<description>About {lang}</description>"]
        (orig / f"train.tags.de-en.{lang}").write_text("\n".join(header + toy) + "\n", encoding="utf-8")
        segs = [f'<seg id="{i}"> {line} </seg>' for i, line in enumerate(lines(SHARED_DATA / "ted-toy-de-en" / f"test.{lang}"), 1)]
        (orig / f"IWSLT14.TED.tst2012.de-en.{lang}.xml").write_text(
            "\n".join(["<mteval>", *segs, "</mteval>"]) + "\n", encoding="utf-8")
    return orig


def test_prepare_iwslt14(iwslt_orig, tmp_path):
    out = tmp_path / "data-bin" / "iwslt14"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 1000)
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "de", "en")
    for lang in ("de", "en"):
        train, valid = lines(out / "tmp" / f"train.{lang}"), lines(out / "tmp" / f"valid.{lang}")
        assert len(valid) == (len(train) + len(valid)) // 23 and train[0] == f"title {lang}"
        expected = [line for name in IWSLT_TESTS for line in lines(IWSLT / "reference-tokenized" / f"{name}.de-en.{lang}")]
        test = lines(out / "tmp" / f"test.{lang}")
        assert len(test) == len(expected) + 20
        assert sum(a == b for a, b in zip(test, expected)) >= 0.999 * len(expected)
    assert (out / "spm.model").exists()


def test_prepare_wmt14_partial_data(tmp_path):
    shared("wmt14-en-de")
    out = tmp_path / "wmt14"
    result = run_recipe("prepare-wmt14en2de.sh", "--orig", WMT, "--out", out, "--vocab-size", 2000,
                        "--train-tok", WMT / "train-sample.tok", "--valid-tok", WMT / "newstest2012.tok")
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "en", "de")
    raw = lines(out / "raw" / "test.de")
    assert len(raw) == 3003 and raw[0] == "Gutach: Noch mehr Sicherheit für Fußgänger"
    tokenized = lines(out / "tmp" / "test.de")
    assert tokenized[1].startswith("Sie stehen keine 100 Meter voneinander entfernt : ")
    assert "B 33 @-@ Fußgängerampel" in tokenized[1]
    assert lines(out / "tmp" / "train.en") == lines(WMT / "train-sample.tok.en")
    assert 0 < len(lines(out / "train.en")) <= 10000


def test_missing_input_file(iwslt_orig, tmp_path):
    (iwslt_orig / "IWSLT14.TED.tst2011.de-en.en.xml").unlink()
    out = tmp_path / "out"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: missing file: {iwslt_orig}/IWSLT14.TED.tst2011.de-en.en.xml"
    assert not out.exists()

    result = run_recipe("prepare-wmt14en2de.sh", "--orig", shared("wmt14-en-de"), "--out", out,
                        "--train-tok", WMT / "train-sample.tok")
    assert result.returncode != 0
    assert "error: missing file: newstest2013.en" in result.stderr
    assert not out.exists()


def test_mismatched_line_counts(iwslt_orig, tmp_path):
    train_en = iwslt_orig / "train.tags.de-en.en"
    train_en.write_text(train_en.read_text(encoding="utf-8") + "one more line\n", encoding="utf-8")
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", tmp_path / "out")
    assert result.returncode != 0
    assert "train.tags.de-en.de: 1005" in result.stderr and "train.tags.de-en.en: 1006" in result.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_leaves_no_output(iwslt_orig, tmp_path):
    """The bad file is the last one read: the half-done work must not survive."""
    bad = iwslt_orig / "IWSLT14.TED.tst2012.de-en.en.xml"
    bad.write_bytes(bad.read_bytes() + b'<seg id="99"> caf\xe9 </seg>\n')
    out = tmp_path / "data-bin" / "out"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 1000)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: line 23 is not valid UTF-8")
    assert list((tmp_path / "data-bin").iterdir()) == []
