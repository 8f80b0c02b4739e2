"""prepare-iwslt14.sh and prepare-wmt14en2de.sh (which call the installed rdrop-* commands beside
PYTHON): prepare -> binarize, on the synthetic corpus (laid out as the downloads are) and on the
real IWSLT14 and WMT14 test sets.

A recipe run costs seconds whatever the size of its input (about 30 processes: a Python start
per file and step, fairseq-preprocess's import): the two IWSLT14 conformance tests share one run,
and the error tests fail as early as what they check allows."""

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import ROOT, SHARED_DATA, run_cli, shared

RECIPES = ROOT / "examples" / "translation"
IWSLT = SHARED_DATA / "iwslt14-de-en"
WMT = SHARED_DATA / "wmt14-en-de"
IWSLT_TESTS = [
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
]


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
    tests = {name: valid[5 * i : 5 * i + 5] for i, name in enumerate(IWSLT_TESTS)}
    return {**tests, "IWSLT14.TED.tst2012": corpus.pairs["test"]}


def make_iwslt_orig(corpus, folder):
    """An IWSLT14 orig/ folder in ``folder`` made of the synthetic corpus: train.tags.de-en.{de,en}
    (1 000 sentences after 5 tag lines) and the five test sets as XML."""
    orig = folder / "orig"
    orig.mkdir()
    for lang in ("de", "en"):
        header = [
            "<url>http://www.ted.com/talks/a.html</url>",
            "<keywords>talks</keywords>",
            "<talkid>1</talkid>",
            f"<title>Title {lang}</title>",
            f"<description>About {lang}</description>",
        ]
        train = [getattr(p, lang) for p in corpus.pairs["train"]]
        (orig / f"train.tags.de-en.{lang}").write_text(
            "\n".join(header + train) + "\n", encoding="utf-8"
        )
        for name, pairs in synthetic_iwslt_tests(corpus).items():
            write_xml(orig / f"{name}.de-en.{lang}.xml", [getattr(p, lang) for p in pairs])
    return orig


@pytest.fixture
def iwslt_orig(corpus, tmp_path):
    return make_iwslt_orig(corpus, tmp_path)


@pytest.fixture(scope="module")
def iwslt_prepared(corpus, tmp_path_factory):
    """One prepare-iwslt14.sh run for the two tests below: the synthetic orig/ folder, with the
    four real dev/test sets of SHARED_DATA in place of the synthetic ones where it has them
    (``real``); train, valid and tst2012 stay synthetic either way."""
    root = tmp_path_factory.mktemp("iwslt14")
    orig = make_iwslt_orig(corpus, root)
    real = IWSLT.is_dir()
    if real:
        for name in IWSLT_TESTS:
            for lang in ("de", "en"):
                xml = orig / f"{name}.de-en.{lang}.xml"
                xml.unlink()
                xml.symlink_to(IWSLT / "orig" / xml.name)
    out = root / "data-bin" / "iwslt14"
    result = run_recipe("prepare-iwslt14.sh", "--orig", orig, "--out", out, "--bpe-tokens", 300)
    return SimpleNamespace(out=out, result=result, real=real)


def test_prepare_iwslt14(iwslt_prepared, corpus):
    """Train, valid and the test sets against the synthetic corpus's own tokenization; with the
    real dev/test sets in the run, tst2012 alone (the next test checks the real ones)."""
    out, result = iwslt_prepared.out, iwslt_prepared.result
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "de", "en")
    for lang in ("de", "en"):
        train, valid = lines(out / "tmp" / f"train.{lang}"), lines(out / "tmp" / f"valid.{lang}")
        assert len(valid) == (len(train) + len(valid)) // 23 and train[0] == f"title {lang}"
        tokenized = [p.tokenized(lang, lowercase=True) for p in corpus.pairs["train"]]
        assert sorted(train + valid) == sorted([f"title {lang}", f"about {lang}", *tokenized])
        tests = synthetic_iwslt_tests(corpus)
        if iwslt_prepared.real:
            tests = {"IWSLT14.TED.tst2012": tests["IWSLT14.TED.tst2012"]}
        expected = [p.tokenized(lang, lowercase=True) for pairs in tests.values() for p in pairs]
        test = lines(out / "tmp" / f"test.{lang}")
        assert test[-len(expected) :] == expected
        assert iwslt_prepared.real or len(test) == len(expected)
    assert (out / "spm.model").exists()


def test_prepare_iwslt14_real_test_sets_match_fairseq(request):
    """The four real dev/test sets through the recipe: every line as fairseq's perl pipeline."""
    shared("iwslt14-de-en")  # before the run: skipped, this test costs nothing
    iwslt_prepared = request.getfixturevalue("iwslt_prepared")
    out, result = iwslt_prepared.out, iwslt_prepared.result
    assert iwslt_prepared.real and result.returncode == 0, result.stderr
    assert_binarized(out, "de", "en")
    for lang in ("de", "en"):
        expected = [
            line
            for name in IWSLT_TESTS
            for line in lines(IWSLT / "reference-tokenized" / f"{name}.de-en.{lang}")
        ]
        test = lines(out / "tmp" / f"test.{lang}")
        assert len(test) == len(expected) + 20
        assert test[: len(expected)] == expected


def write_sgm(path, root, sentences):
    segs = [f'<seg id="{i}">{line}</seg>' for i, line in enumerate(sentences, 1)]
    path.write_text(
        "\n".join(
            [
                root,
                '<doc sysid="ref" docid="1" genre="news" origlang="de">',
                *segs,
                "</doc>",
                root.replace("<", "</").split()[0] + ">",
            ]
        )
        + "\n",
        encoding="utf-8",
    )


@pytest.fixture
def wmt_orig(corpus, tmp_path):
    """WMT14 inputs made of the synthetic corpus: the test set as newstest2014 SGML in orig/, and
    Moses-tokenized (-a) train and valid text, as in ../shared/data/wmt14-en-de."""
    orig = tmp_path / "wmt-orig"
    orig.mkdir()
    for lang, kind in (("en", "src"), ("de", "ref")):
        root = f'<{kind}set setid="newstest2014" srclang="any">'
        write_sgm(
            orig / f"newstest2014-deen-{kind}.{lang}.sgm",
            root,
            [getattr(p, lang) for p in corpus.pairs["test"]],
        )
        for split, prefix in (("train", "train-sample.tok"), ("valid", "newstest2012.tok")):
            text = "".join(
                p.tokenized(lang, aggressive_dash=True) + "\n" for p in corpus.pairs[split]
            )
            (orig / f"{prefix}.{lang}").write_text(text, encoding="utf-8")
    return orig


def test_prepare_wmt14_partial_data(wmt_orig, corpus, tmp_path):
    out = tmp_path / "wmt14"
    result = run_recipe(
        "prepare-wmt14en2de.sh",
        "--orig",
        wmt_orig,
        "--out",
        out,
        "--vocab-size",
        300,
        "--train-tok",
        wmt_orig / "train-sample.tok",
        "--valid-tok",
        wmt_orig / "newstest2012.tok",
    )
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "en", "de")
    test = corpus.pairs["test"]
    assert lines(out / "raw" / "test.de") == [p.de for p in test]
    tokenized = lines(out / "tmp" / "test.de")
    assert tokenized == [p.tokenized("de", aggressive_dash=True) for p in test]
    assert any(" @-@ " in line for line in tokenized) and any(
        "&quot;" in line for line in tokenized
    )
    assert lines(out / "tmp" / "train.en") == lines(wmt_orig / "train-sample.tok.en")
    assert 0 < len(lines(out / "train.en")) <= 1000


@pytest.mark.slow
def test_prepare_wmt14_real_newstest2014(tmp_path):
    """The official newstest2014 SGML, whole, and the first 1 000 lines of the real partial train
    data and 300 of newstest2012 (the recipe copies that pre-tokenized text as it is; the whole
    10 000 + 3 000 lines only made fairseq-preprocess 7 s slower)."""
    shared("wmt14-en-de")
    sample = tmp_path / "sample"
    sample.mkdir()
    for name, n in (("train-sample.tok", 1000), ("newstest2012.tok", 300)):
        for lang in ("en", "de"):
            head = lines(WMT / f"{name}.{lang}")[:n]
            (sample / f"{name}.{lang}").write_text("".join(f"{s}\n" for s in head), "utf-8")
    out = tmp_path / "wmt14"
    result = run_recipe(
        "prepare-wmt14en2de.sh",
        "--orig",
        WMT,
        "--out",
        out,
        "--vocab-size",
        2000,
        "--train-tok",
        sample / "train-sample.tok",
        "--valid-tok",
        sample / "newstest2012.tok",
    )
    assert result.returncode == 0, result.stderr
    assert_binarized(out, "en", "de")
    raw = lines(out / "raw" / "test.de")
    assert len(raw) == 3003 and raw[0] == "Gutach: Noch mehr Sicherheit für Fußgänger"
    tokenized = lines(out / "tmp" / "test.de")
    assert tokenized[1].startswith("Sie stehen keine 100 Meter voneinander entfernt : ")
    assert "B 33 @-@ Fußgängerampel" in tokenized[1]
    assert lines(out / "tmp" / "train.en") == lines(WMT / "train-sample.tok.en")[:1000]
    assert 0 < len(lines(out / "train.en")) <= 1000


def test_missing_input_file(iwslt_orig, wmt_orig, tmp_path):
    (iwslt_orig / "IWSLT14.TED.tst2011.de-en.en.xml").unlink()
    out = tmp_path / "out"
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out)
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: missing file: {iwslt_orig}/IWSLT14.TED.tst2011.de-en.en.xml"
    )
    assert not out.exists()

    result = run_recipe(
        "prepare-wmt14en2de.sh",
        "--orig",
        wmt_orig,
        "--out",
        out,
        "--train-tok",
        wmt_orig / "train-sample.tok",
    )
    assert result.returncode != 0
    assert "error: missing file: newstest2013.en" in result.stderr
    assert not out.exists()


def test_mismatched_line_counts(iwslt_orig, tmp_path):
    train_en = iwslt_orig / "train.tags.de-en.en"
    train_en.write_text(train_en.read_text(encoding="utf-8") + "one more line\n", encoding="utf-8")
    result = run_recipe("prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", tmp_path / "out")
    assert result.returncode != 0
    assert (
        "train.tags.de-en.de: 1005" in result.stderr
        and "train.tags.de-en.en: 1006" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_leaves_no_output(iwslt_orig, tmp_path):
    """The bad file is the first test set's English side, read after the train and valid text and
    the German side are written in the recipe's work folder: the half-done work must not survive.
    (The recipe checks each file only when it reads it: breaking the last file read would cost 15
    more processes and prove no more, the work folder is removed the same way whatever it holds.)
    """
    bad = iwslt_orig / "IWSLT14.TED.dev2010.de-en.en.xml"  # <mteval>, 5 <seg> lines, </mteval>
    bad.write_bytes(bad.read_bytes() + b'<seg id="99"> caf\xe9 </seg>\n')
    out = tmp_path / "data-bin" / "out"
    result = run_recipe(
        "prepare-iwslt14.sh", "--orig", iwslt_orig, "--out", out, "--bpe-tokens", 300
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {bad}: line 8 is not valid UTF-8")
    )
    assert list((tmp_path / "data-bin").iterdir()) == []


# -- the quick start's console: short on a terminal, plain elsewhere, the whole output in logs --

FAKE_TRAIN = r"""
import logging, sys, time, warnings
from tqdm import tqdm
logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                    stream=sys.stdout, level=logging.INFO)
logging.getLogger("fairseq_cli.train").info("{'common': {" + "'option': None, " * 400 + "}}")
warnings.warn("a deprecation notice of some library", DeprecationWarning, stacklevel=1)
print("  deprecation_warning(", file=sys.stderr)
for epoch in (1, 2, 3):
    if sys.stderr.isatty():  # fairseq's --log-format tqdm (it falls back to simple otherwise)
        bar = tqdm(range(40), f"epoch {epoch:03d}", leave=False, mininterval=0)
        for i in bar:
            bar.set_postfix({"loss": "9.123", "nll_loss": "8.5", "ppl": "362.1", "wps": "1234",
                             "lr": "0.0001", "gnorm": "1.5", "train_wall": "12", "wall": "99"})
            time.sleep(0.002)
    else:
        for done in (10, 20, 30):
            logging.getLogger("train_inner").info(
                f"epoch {epoch:03d}:     {done} / 40 loss=9.1, nll_loss=8.2, kl_loss=0.3, "
                "ppl=300, wps=1000, ups=1, wpb=900, bsz=64, num_updates=5, lr=0.0001, gnorm=1")
    if sys.stderr.isatty():  # validation's bar, as fairseq draws it
        for i in tqdm(range(5), f"epoch {epoch:03d} | valid on 'valid' subset", leave=False):
            time.sleep(0.002)
    logging.getLogger("valid").info(
        f"epoch {epoch:03d} | valid on 'valid' subset | loss 8 | nll_loss 7 | ppl 128 | bleu 3.4")
    logging.getLogger("train").info(
        f"epoch {epoch:03d} | loss 9.1 | nll_loss 8.2 | kl_loss 0.3 | ppl 300 | wps 1000 | wall 50")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def run_logged(tmp_path, *fake_args, terminal, verbose=False, width=80):
    """The fake training above through rdrop_tools.run_logged: (console text, log text, status),
    on a pseudo-terminal WIDTH columns wide when ``terminal``."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN, encoding="utf-8")
    log = tmp_path / "train.log"
    command = [
        sys.executable,
        "-m",
        "rdrop_tools.run_logged",
        "--log",
        str(log),
        *(["--verbose"] if verbose else []),
        "--",
        sys.executable,
        str(fake),
        *fake_args,
    ]
    if not terminal:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        return proc.stdout + proc.stderr, log.read_text(encoding="utf-8"), proc.returncode
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, width, 0, 0))
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    status = proc.wait(timeout=120)
    return b"".join(chunks).decode("utf-8", "replace"), log.read_text(encoding="utf-8"), status


def screen_lines(text):
    """The lines a terminal keeps, and every state each line went through (cut at \\r)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.replace("\r\n", "\n"))
    kept = [line.split("\r")[-1] for line in text.split("\n")]
    states = [state for line in text.split("\n") for state in line.split("\r")]
    return [line for line in kept if line.strip()], states


def test_on_a_terminal_a_bar_per_epoch_and_short_lines(tmp_path):
    out, log, status = run_logged(tmp_path, terminal=True, width=80)
    assert status == 0
    lines, states = screen_lines(out)
    assert max(len(state) for state in states) < 80, max(states, key=len)
    bars = [state for state in states if "%|" in state]
    assert any(s.startswith("epoch 001:") for s in bars)
    assert any(s.startswith("epoch 003:") for s in bars)
    summaries = [line for line in lines if re.match(r"epoch \d (train|valid): ", line)]
    assert len(summaries) == 6
    assert "bleu 3.4" in summaries[-2] and "kl_loss 0.3" in summaries[-1]
    assert len(lines) <= 8, lines  # the summaries; no config, warnings or bars left behind
    assert "'option': None" in log and "deprecation_warning(" in log and "%|" not in log


def test_elsewhere_periodic_lines_and_no_bars(tmp_path):
    out, log, status = run_logged(tmp_path, terminal=False)
    assert status == 0
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    progress = [line for line in lines if re.match(r"epoch \d: \d+/40 batches, loss 9.1", line)]
    assert len(progress) == 9 and len(lines) == 9 + 6, lines
    assert max(len(line) for line in lines) <= 160
    assert "'option': None" in log


def test_verbose_shows_everything(tmp_path):
    out, log, status = run_logged(tmp_path, terminal=False, verbose=True)
    assert status == 0 and "'option': None" in out and "deprecation_warning(" in out
    assert "'option': None" in log


def test_a_failed_step_names_its_log(tmp_path):
    out, log, status = run_logged(tmp_path, "3", terminal=False)
    assert status == 3
    last = out.strip().splitlines()[-1]
    assert last == (
        "error: fake_train.py stopped with exit status 3; "
        f"the whole output is in {tmp_path / 'train.log'}"
    )


def test_quickstart_without_corpus_or_network_is_one_line(tmp_path):
    """No --data, no SHARED_DATA/multi30k-de-en and no network (a proxy that refuses): one
    line naming both ways out, without curl's or gzip's messages."""
    no_network = {
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "SHARED_DATA": str(tmp_path / "shared"),
    }
    result = run_cli(
        "bash",
        RECIPES / "quickstart.sh",
        "--work",
        tmp_path / "work",
        check=False,
        env={"PYTHON": sys.executable, **no_network},
    )
    assert result.returncode != 0
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: could not download Multi30k")
    assert "--data DIR" in errors[0] and f"{tmp_path / 'shared'}/multi30k-de-en" in errors[0]
    assert "curl" not in result.stderr and "gzip" not in result.stderr
    assert not (tmp_path / "work" / "data-bin").exists()


def test_train_recipes_take_a_data_bin_of_ones_own(tmp_path):
    """A folder from one's own fairseq-preprocess (no .complete marker) is a data-bin; a folder
    without dictionaries and splits is refused in one line."""
    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir()
    other.mkdir()
    for name in ("dict.de.txt", "dict.en.txt", "train.de-en.de.idx", "valid.de-en.de.idx"):
        (own / name).touch()
    check = f'source "{RECIPES}/common.sh"; for d; do is_data_bin "$d" && echo yes || echo no; done'
    result = run_cli("bash", "-c", check, "is_data_bin", own, other, env={"PYTHON": sys.executable})
    assert result.stdout.split() == ["yes", "no"]  # common.sh sourced once: it starts Python
    result = run_recipe("train-multi30k.sh", other, tmp_path / "save")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {other} is not a data-bin folder: it needs what fairseq-preprocess writes, "
        "dict.*.txt and the train and valid splits (*.idx, *.bin); "
        "the prepare-*.sh recipes make one"
    ]


def test_a_line_is_never_lost_where_the_output_is_cut():
    """A pseudo-terminal ends lines with \\r\\n, and reads cut the stream anywhere: at every cut,
    the summary after a bar is shown and every line that is no bar is logged."""
    import io

    from rdrop_tools.run_logged import View

    bar = "epoch 001 | valid on 'valid' subset: 100%|####| 13/13 [00:20<00:00, 1.5it/s]"
    info = (
        "2026-12-04 15:40:00 | INFO | valid | epoch 001 | valid on 'valid' subset | "
        "loss 10.168 | nll_loss 9.765 | ppl 869.86 | bleu 0.01"
    )
    other = "2026-12-04 15:40:01 | INFO | fairseq.checkpoint_utils | saved checkpoint"
    streams = [
        f"\r{bar}\r{' ' * 40}\r{info}\r\n{other}\r\n",
        f"\r{bar}\r{' ' * 79}{info}\r\n{other}\r\n",
    ]  # as fairseq's validation leaves it
    for stream, cut in [(s, cut) for s in streams for cut in range(len(s) + 1)]:
        out, log = io.StringIO(), io.StringIO()
        view = View(out, log, terminal=True, width=80, verbose=False)
        view.feed(stream[:cut])
        view.feed(stream[cut:])
        view.close()
        shown = re.sub(r"\x1b\[K", "", out.getvalue()).replace("\r", "\n").split("\n")
        assert "epoch 1 valid: loss 10.168, nll_loss 9.765, ppl 869.86, bleu 0.01" in shown, cut
        assert log.getvalue().splitlines() == [info, other], cut


def test_the_lines_worth_showing():
    """Of a step's output the console shows the epoch summaries, the progress lines of
    --log-format simple, fairseq-generate's count, the plugin's notes and the errors."""
    from rdrop_tools.run_logged import summarize

    stamp = "2026-12-04 16:05:16 | INFO"
    shown = {
        f"{stamp} | train | epoch 002 | loss 18.7 | nll_loss 8.4 | kl_loss 0.12 | ppl 355 | "
        "wps 9 | wall 1701": "epoch 2 train: loss 18.7, nll_loss 8.4, kl_loss 0.12, ppl 355, "
        "wall 1701",
        f"{stamp} | train_inner | epoch 001:     50 / 94 loss=22.5, nll_loss=10.5, kl_loss=0.2, "
        "ppl=1452, wps=300, lr=5e-05": "epoch 1: 50/94 batches, loss 22.5, nll_loss 10.5, "
        "kl_loss 0.2, ppl 1452, lr 5e-05",
        "INFO:fairseq_cli.generate:Translated 1,000 sentences (6,296 tokens) in 29.6s": (
            "Translated 1,000 sentences (6,296 tokens) in 29.6s"
        ),
        "nothing to do: the checkpoint loaded is at update 282 (epoch 4), so --max-epoch is "
        "reached": "nothing to do: the checkpoint loaded is at update 282 (epoch 4), so "
        "--max-epoch is reached",
        "fairseq-train: error: argument --lr: invalid float": "error: argument --lr: invalid float",
        "error: data directory D does not exist": "error: data directory D does not exist",
    }
    for line, expected in shown.items():
        assert summarize(line) == expected, line
    for line in (
        f"{stamp} | fairseq.tasks.fairseq_task | creating new batches for epoch 1",
        "INFO:fairseq.tasks.translation:[de] dictionary: 8000 types",
        "  warnings.warn(",
        "usage: fairseq-train [-h]",
        "    raise UsageError(msg)",
    ):
        assert summarize(line) is None, line
