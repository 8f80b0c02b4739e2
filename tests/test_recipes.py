"""prepare-iwslt14.sh and prepare-wmt14en2de.sh (which call the installed rdrop-* commands beside
PYTHON): prepare -> binarize, on the synthetic corpus (laid out as the downloads are) and on the
real IWSLT14 and WMT14 test sets."""

import sys
from pathlib import Path

import pytest

from support import ROOT, SHARED_DATA, run_cli, shared

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


def write_xml(path, sentences):
    segs = [f'<seg id="{i}"> {line} </seg>' for i, line in enumerate(sentences, 1)]
    path.write_text("\n".join(["<mteval>", *segs, "</mteval>"]) + "\n", encoding="utf-8")


def synthetic_iwslt_tests(corpus):
    """{IWSLT14 test set: its pairs}: the synthetic valid split shared by the four dev/test sets
    that precede tst2012, and the synthetic test split as tst2012."""
    valid = corpus.pairs["valid"]
    tests = {name: valid[5 * i:5 * i + 5] for i, name in enumerate(IWSLT_TESTS)}
    return {**tests, "IWSLT14.TED.tst2012": corpus.pairs["test"]}


@pytest.fixture
def iwslt_orig(corpus, tmp_path):
    """An IWSLT14 orig/ folder made of the synthetic corpus: train.tags.de-en.{de,en} (1 000
    sentences after 5 tag lines) and the five test sets as XML."""
    orig = tmp_path / "orig"
    orig.mkdir()
    for lang in ("de", "en"):
        header = ["<url>http://www.ted.com/talks/a.html</url>", "<keywords>talks</keywords>",
                  "<talkid>1</talkid>", f"<title>Title {lang}</title>", f"<description>About {lang}</description>"]
        train = [getattr(p, lang) for p in corpus.pairs["train"]]
        (orig / f"train.tags.de-en.{lang}").write_text("\n".join(header + train) + "\n", encoding="utf-8")
        for name, pairs in synthetic_iwslt_tests(corpus).items():
            write_xml(orig / f"{name}.de-en.{lang}.xml", [getattr(p, lang) for p in pairs])
    return orig


def test_prepare_iwslt14(iwslt_orig, corpus, tmp_path):
    out = tmp_path / "data-bin" / "iwslt14"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 300)
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "de", "en")
    for lang in ("de", "en"):
        train, valid = lines(out / "tmp" / f"train.{lang}"), lines(out / "tmp" / f"valid.{lang}")
        assert len(valid) == (len(train) + len(valid)) // 23 and train[0] == f"title {lang}"
        tokenized = [p.tokenized(lang, lowercase=True) for p in corpus.pairs["train"]]
        assert sorted(train + valid) == sorted([f"title {lang}", f"about {lang}", *tokenized])
        expected = [p.tokenized(lang, lowercase=True)
                    for pairs in synthetic_iwslt_tests(corpus).values() for p in pairs]
        assert lines(out / "tmp" / f"test.{lang}") == expected
    assert (out / "spm.model").exists()


def test_prepare_iwslt14_real_test_sets_match_fairseq(iwslt_orig, tmp_path):
    """The four real dev/test sets through the recipe: every line as fairseq's perl pipeline."""
    shared("iwslt14-de-en")
    for name in IWSLT_TESTS:
        for lang in ("de", "en"):
            real = iwslt_orig / f"{name}.de-en.{lang}.xml"
            real.unlink()
            real.symlink_to(IWSLT / "orig" / real.name)
    out = tmp_path / "data-bin" / "iwslt14"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 500)
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "de", "en")
    for lang in ("de", "en"):
        expected = [line for name in IWSLT_TESTS for line in lines(IWSLT / "reference-tokenized" / f"{name}.de-en.{lang}")]
        test = lines(out / "tmp" / f"test.{lang}")
        assert len(test) == len(expected) + 20
        assert test[:len(expected)] == expected


def write_sgm(path, root, sentences):
    segs = [f'<seg id="{i}">{line}</seg>' for i, line in enumerate(sentences, 1)]
    path.write_text("\n".join([root, '<doc sysid="ref" docid="1" genre="news" origlang="de">', *segs,
                               "</doc>", root.replace("<", "</").split()[0] + ">"]) + "\n", encoding="utf-8")


@pytest.fixture
def wmt_orig(corpus, tmp_path):
    """WMT14 inputs made of the synthetic corpus: the test set as newstest2014 SGML in orig/, and
    Moses-tokenized (-a) train and valid text, as in ../shared/data/wmt14-en-de."""
    orig = tmp_path / "wmt-orig"
    orig.mkdir()
    for lang, kind in (("en", "src"), ("de", "ref")):
        root = f'<{kind}set setid="newstest2014" srclang="any">'
        write_sgm(orig / f"newstest2014-deen-{kind}.{lang}.sgm", root, [getattr(p, lang) for p in corpus.pairs["test"]])
        for split, prefix in (("train", "train-sample.tok"), ("valid", "newstest2012.tok")):
            text = "".join(p.tokenized(lang, aggressive_dash=True) + "\n" for p in corpus.pairs[split])
            (orig / f"{prefix}.{lang}").write_text(text, encoding="utf-8")
    return orig


def test_prepare_wmt14_partial_data(wmt_orig, corpus, tmp_path):
    out = tmp_path / "wmt14"
    result = run_recipe("prepare-wmt14en2de.sh", "--orig", wmt_orig, "--out", out, "--vocab-size", 300,
                        "--train-tok", wmt_orig / "train-sample.tok", "--valid-tok", wmt_orig / "newstest2012.tok")
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "en", "de")
    test = corpus.pairs["test"]
    assert lines(out / "raw" / "test.de") == [p.de for p in test]
    tokenized = lines(out / "tmp" / "test.de")
    assert tokenized == [p.tokenized("de", aggressive_dash=True) for p in test]
    assert any(" @-@ " in line for line in tokenized) and any("&quot;" in line for line in tokenized)
    assert lines(out / "tmp" / "train.en") == lines(wmt_orig / "train-sample.tok.en")
    assert 0 < len(lines(out / "train.en")) <= 1000


@pytest.mark.slow
def test_prepare_wmt14_real_newstest2014(tmp_path):
    """The official newstest2014 SGML and the real partial train data."""
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


def test_missing_input_file(iwslt_orig, wmt_orig, tmp_path):
    (iwslt_orig / "IWSLT14.TED.tst2011.de-en.en.xml").unlink()
    out = tmp_path / "out"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: missing file: {iwslt_orig}/IWSLT14.TED.tst2011.de-en.en.xml"
    assert not out.exists()

    result = run_recipe("prepare-wmt14en2de.sh", "--orig", wmt_orig, "--out", out,
                        "--train-tok", wmt_orig / "train-sample.tok")
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
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: line 23 is not valid UTF-8")
    assert list((tmp_path / "data-bin").iterdir()) == []
