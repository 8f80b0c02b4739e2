"""rdrop-text-pipeline: conformance with fairseq's perl pipeline, the filters, bad input."""

import pytest

from rdrop_tools import text_pipeline
from rdrop_tools.text_files import read_lines
from support import BIN, run_cli, shared

TEST_SETS = [
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
]


def run(*args):
    return run_cli(BIN / "rdrop-text-pipeline", *args, check=False)


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("name", TEST_SETS)
def test_matches_fairseq_perl_pipeline(name, lang):
    """Extract, tokenize and lowercase as prepare-iwslt14.sh: every line identical."""
    iwslt = shared("iwslt14-de-en")
    xml = iwslt / "orig" / f"{name}.de-en.{lang}.xml"
    reference = read_lines(iwslt / "reference-tokenized" / f"{name}.de-en.{lang}")
    segments = list(text_pipeline.extract_xml(text_pipeline.iter_lines(xml)))
    ours = list(text_pipeline.tokenize_lines(segments, lang=lang, lowercase=True))
    assert len(ours) == len(reference)
    differing = [(i, o, r) for i, (o, r) in enumerate(zip(ours, reference), 1) if o != r]
    assert differing == [], f"{len(differing)} of {len(reference)} lines differ: {differing[:5]}"


def test_tokenizer_fixes_over_sacremoses():
    tokenize = text_pipeline.Tokenizer("en", lowercase=True)
    # tokenizer.perl always splits the period off the last word; plain sacremoses does not
    assert tokenize("We went to the U.S.") == "we went to the u.s ."
    assert tokenize("Wait...") == "wait ..."
    # XML entities in the input are escaped again, as fairseq's script does
    assert tokenize("R&amp;D") == "r &amp; amp ; d"
    assert text_pipeline.Tokenizer("de", aggressive_dash=True)("B 33-Ampel") == "B 33 @-@ Ampel"


def test_extract_tags_and_xml():
    tags = [
        "<url>http://www.ted.com/talks/x.html</url>",
        "<keywords>talks, science</keywords>",
        "<talkid>1</talkid>",
        "<title>A title</title>",
        "<description>About it</description>",
        "Plain text",
    ]
    assert list(text_pipeline.extract_tags(tags)) == ["A title", "About it", "Plain text"]
    xml = ['<doc docid="1">', '<seg id="1"> It\u2019s R&amp;D. </seg>', "</doc>"]
    assert list(text_pipeline.extract_xml(xml)) == ["It's R&amp;D."]
    assert list(text_pipeline.extract_xml(xml, straight_apostrophes=False)) == [
        "It\u2019s R&amp;D."
    ]


def test_clean_and_split():
    pairs = [
        ("a b", "c d"),
        ("", "x"),  # empty side
        ("a  b   c", "d"),  # ratio 3 > 1.5
        ("a " * 176, "b " * 176),  # too long
        (" a ", "b"),
    ]
    assert list(text_pipeline.clean_pairs(pairs, ratio=1.5, min_len=1, max_len=175)) == [
        ("a b", "c d"),
        ("a", "b"),
    ]
    flags = [is_valid for is_valid, _ in text_pipeline.split_every(range(50), 23)]
    assert [i + 1 for i, flag in enumerate(flags) if flag] == [23, 46]


@pytest.mark.slow
def test_cli_clean_split(tmp_path):
    (tmp_path / "c.de").write_text(
        "".join(f"w{i} x\n" for i in range(46)) + "a\n", encoding="utf-8"
    )
    (tmp_path / "c.en").write_text(
        "".join(f"v{i} y\n" for i in range(46)) + "a b c\n", encoding="utf-8"
    )
    assert (
        run(
            "clean",
            "--ratio",
            "1.5",
            "--min-len",
            "1",
            "--max-len",
            "175",
            tmp_path / "c",
            "de",
            "en",
            tmp_path / "k",
        ).returncode
        == 0
    )
    assert len((tmp_path / "k.en").read_text().splitlines()) == 46
    assert (
        run(
            "split",
            "--every",
            "23",
            tmp_path / "k",
            "de",
            "en",
            tmp_path / "train",
            tmp_path / "valid",
        ).returncode
        == 0
    )
    assert (tmp_path / "valid.de").read_text() == "w22 x\nw45 x\n"
    assert len((tmp_path / "train.en").read_text().splitlines()) == 44


@pytest.mark.slow
def test_parallel_workers_keep_order(tmp_path):
    lines = [f"Line {i}: it's the U.S. (number {i})." for i in range(3000)]
    (tmp_path / "in").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        run(
            "tokenize", "--lang", "en", "--workers", "2", tmp_path / "in", tmp_path / "out"
        ).returncode
        == 0
    )
    expected = list(text_pipeline.tokenize_lines(lines, lang="en"))
    assert (tmp_path / "out").read_text(encoding="utf-8").splitlines() == expected


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_invalid_utf8_names_file_and_line(tmp_path, workers):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"fine\n" * 600 + b"caf\xe9\n")
    result = run("tokenize", "--lang", "en", "--workers", workers, bad, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: line 601 is not valid UTF-8 (invalid continuation byte)"
    ]
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.slow
def test_missing_file(tmp_path):
    result = run("extract", "--format", "xml", tmp_path / "nope.xml", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no such file: {tmp_path / 'nope.xml'}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_mismatched_line_counts(tmp_path):
    (tmp_path / "c.de").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "c.en").write_text("a\nb\n", encoding="utf-8")
    result = run(
        "clean", "--min-len", "1", "--max-len", "5", tmp_path / "c", "de", "en", tmp_path / "k"
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: parallel files have different line counts "
        f"({tmp_path / 'c.de'}: 3, {tmp_path / 'c.en'}: 2)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.de", "c.en"]
