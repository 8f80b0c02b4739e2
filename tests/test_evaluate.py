"""rdrop-evaluate against the sacrebleu and fairseq-score command lines.

rdrop-evaluate runs as a command where the command line is what is tested (a score printed as
JSON; an error as one line and exit status 1), in this process elsewhere (:func:`evaluate`: its
main, with the exit status and output the command line would end with); fairseq-score runs in
this process too (its cli_main: starting it imports torch and fairseq, seconds a run)."""

import contextlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import pytest

from rdrop_tools import evaluate as evaluate_tool
from support import BIN, run_cli


def evaluate_command(*args):
    return run_cli(BIN / "rdrop-evaluate", *args, check=False)


def evaluate(*args):
    """rdrop-evaluate's main in this process: its exit status, stdout and stderr as the command
    line ends (``sys.exit("error: ...")``: the message on stderr and status 1, as Python does)."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            evaluate_tool.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    if code is not None and not isinstance(code, int):
        err.write(f"{code}\n")
        code = 1
    return SimpleNamespace(returncode=code or 0, stdout=out.getvalue(), stderr=err.getvalue())


def evaluate_json(*args, run=evaluate):
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def degrade(lines, seed, drop=0.15):
    """A deterministic 'system output': the reference with words dropped and swapped."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = [w for w in line.split() if rng.random() > drop]
        if len(words) > 2 and rng.random() < 0.5:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def plain(corpus, tmp_path_factory):
    """The synthetic corpus' English train side as references, with two degraded systems, as
    plain files."""
    folder = tmp_path_factory.mktemp("plain")
    refs = (corpus.raw / "train.en").read_text(encoding="utf-8").splitlines()
    for name, lines in [
        ("ref", refs),
        ("hyp", degrade(refs, 1, 0.1)),
        ("base", degrade(refs, 2, 0.2)),
    ]:
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tokenized(corpus, tmp_path_factory):
    """Tokenized, lowercased references (the synthetic corpus' English train side, as
    prepare-iwslt14.sh leaves it, with an <unk>) and a degraded system with a shared <unk>."""
    folder = tmp_path_factory.mktemp("tok")
    refs = (corpus.tok / "train.en").read_text(encoding="utf-8").splitlines()
    refs[3] = "<unk> " + refs[3]
    hyps = degrade(refs, 3)
    hyps[3] = "<unk> " + hyps[3]
    (folder / "ref").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (folder / "hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    return folder


def sacrebleu_cli(*args):
    result = run_cli("sacrebleu", *args, "--format", "json")
    scores = json.loads(result.stdout)
    return scores if isinstance(scores, list) else [scores]


def fairseq_score(sys_path, ref_path):
    """fairseq-score's BLEU4 (its cli_main, in this process)."""
    from fairseq_cli import score

    out = io.StringIO()
    argv = ["fairseq-score", "--sys", str(sys_path), "--ref", str(ref_path)]
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out):
        score.cli_main()
    return float(re.search(r"BLEU4 = ([0-9.]+)", out.getvalue()).group(1))


def test_plain_files_equal_sacrebleu_cli(plain):
    ours = evaluate_json(  # the command line
        "--hyp",
        plain / "hyp",
        "--ref",
        plain / "ref",
        "--baseline-hyp",
        plain / "base",
        run=evaluate_command,
    )
    bleu, chrf = sacrebleu_cli(plain / "ref", "-i", plain / "hyp", "-m", "bleu", "chrf", "-w", "4")
    assert f"{ours['bleu']:.4f}" == f"{bleu['score']:.4f}"
    assert ours["signature"] == bleu["signature"]
    assert f"{ours['chrf']:.4f}" == f"{chrf['score']:.4f}"
    assert ours["chrf_signature"] == chrf["signature"]
    assert ours["n"] == 1000

    baseline, system = sacrebleu_cli(
        plain / "ref", "-i", plain / "base", plain / "hyp", "-m", "bleu", "--paired-bs"
    )
    assert ours["p_value"] == pytest.approx(system["BLEU"]["p_value"], abs=1e-12)
    assert ours["baseline_bleu"] == pytest.approx(baseline["BLEU"]["score"], abs=1e-9)
    assert ours["bleu"] > ours["baseline_bleu"] and ours["p_value"] < 0.05


def test_tokenized_bleu_equals_fairseq_score(tokenized, tmp_path):
    ours = evaluate_json("--hyp", tokenized / "hyp", "--ref", tokenized / "ref", "--tokenized")
    assert round(ours["tok_bleu"], 2) == fairseq_score(tokenized / "hyp", tokenized / "ref")

    if shutil.which("perl") is None:
        pytest.skip("perl not available for compound_split_bleu.sh's one-liner")
    for name in ("hyp", "ref"):  # the splitting step of fairseq's scripts/compound_split_bleu.sh
        with open(tokenized / name) as fin, open(tmp_path / name, "w") as fout:
            subprocess.run(
                ["perl", "-ple", r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"],
                stdin=fin,
                stdout=fout,
                check=True,
            )
    assert round(ours["compound_bleu"], 2) == fairseq_score(tmp_path / "hyp", tmp_path / "ref")
    assert ours["compound_bleu"] != ours["tok_bleu"]


def test_tokenized_input_is_detokenized_for_sacrebleu(tokenized, tmp_path):
    """--tokenized: sacreBLEU of the Moses-detokenized text, as the CLI scores detokenized files."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer("en").detokenize
    for name in ("hyp", "ref"):
        lines = (tokenized / name).read_text(encoding="utf-8").splitlines()
        (tmp_path / name).write_text(
            "\n".join(detok(line.split()) for line in lines) + "\n", encoding="utf-8"
        )
    ours = evaluate_json("--hyp", tokenized / "hyp", "--ref", tokenized / "ref", "--tokenized")
    (bleu,) = sacrebleu_cli(tmp_path / "ref", "-i", tmp_path / "hyp", "-m", "bleu", "-w", "4")
    assert f"{ours['bleu']:.4f}" == f"{bleu['score']:.4f}"
    assert (
        "&quot;" not in (tmp_path / "ref").read_text()
        and "&quot;" in (tokenized / "ref").read_text()
    )


def test_generate_log(tokenized, tmp_path):
    hyps = (tokenized / "hyp").read_text(encoding="utf-8").splitlines()[:50]
    refs = (tokenized / "ref").read_text(encoding="utf-8").splitlines()[:50]
    log = ["2024-01-01 00:00:00 | INFO | fairseq_cli.generate | loading model(s)"]
    for i in random.Random(0).sample(range(50), 50):  # fairseq prints sentences by length, not id
        log += [
            f"S-{i}\tquelle {i}",
            f"T-{i}\t{refs[i]}",
            f"H-{i}\t-0.5\t{hyps[i]}",
            f"D-{i}\t-0.5\t{hyps[i]}",
            f"P-{i}\t-0.1 -0.2",
        ]
    log.append("Generate test with beam=5: BLEU4 = 1.00, 1.0/1.0/1.0/1.0 (BP=1.000)")
    (tmp_path / "gen.txt").write_text("\n".join(log) + "\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("\n".join(refs) + "\n", encoding="utf-8")
    from_log = evaluate_json("--generate-log", tmp_path / "gen.txt", "--tokenized")
    from_files = evaluate_json("--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref", "--tokenized")
    assert from_log == from_files and from_log["n"] == 50

    text = evaluate(
        "--generate-log",
        tmp_path / "gen.txt",
        "--tokenized",
        "--baseline-generate-log",
        tmp_path / "gen.txt",
    )
    assert text.returncode == 0, text.stderr
    assert f"BLEU = {from_log['bleu']:.2f} (nrefs:1|" in text.stdout
    assert f"baseline BLEU = {from_log['bleu']:.2f}, paired bootstrap p = " in text.stdout


def test_errors(plain, tmp_path):
    (tmp_path / "short").write_text("one line\n", encoding="utf-8")
    result = evaluate("--hyp", tmp_path / "short", "--ref", plain / "ref")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: different numbers of sentences ({tmp_path / 'short'}: 1, {plain / 'ref'}: 1000)"
    )

    result = evaluate("--hyp", tmp_path / "missing", "--ref", plain / "ref")
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"error: no such file: {tmp_path / 'missing'}",
    )

    (tmp_path / "latin1").write_bytes("café\n".encode("latin-1"))
    result = evaluate("--hyp", tmp_path / "latin1", "--ref", plain / "ref")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'latin1'}: line 1 is not valid UTF-8")

    result = evaluate("--generate-log", plain / "ref")
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"error: {plain / 'ref'}: no H- lines: not a fairseq-generate log",
    )

    assert evaluate("--hyp", plain / "hyp").returncode == 2  # usage error: --ref missing


def test_empty_hypotheses_and_references_are_one_error_line(tmp_path):
    for name in ("hyp", "ref"):
        (tmp_path / name).write_text("", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_tool.main(["--hyp", str(tmp_path / "hyp"), "--ref", str(tmp_path / "ref")])
    assert exit_info.value.code == (
        f"error: {tmp_path / 'hyp'} and {tmp_path / 'ref'}: no sentences to score"
    )


@pytest.mark.slow
def test_empty_input_on_the_command_line(tmp_path):
    for name in ("hyp", "ref"):
        (tmp_path / name).write_text("", encoding="utf-8")
    result = evaluate_command("--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref", "--json")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: {tmp_path / 'hyp'} and {tmp_path / 'ref'}: no sentences to score\n",
    )


def test_a_baseline_identical_to_the_system_has_p_1(plain, tmp_path):
    """sacreBLEU's bootstrap alone gives the same output twice p = 1/1001."""
    same = tmp_path / "same"
    shutil.copyfile(plain / "hyp", same)
    result = evaluate_tool.evaluate(
        *[evaluate_tool.read_lines(p) for p in (plain / "hyp", plain / "ref")],
        baseline_hyps=evaluate_tool.read_lines(same),
    )
    assert result["p_value"] == 1.0 and result["baseline_bleu"] == result["bleu"]


def test_a_directory_for_a_file_says_is_a_directory(plain, tmp_path):
    result = evaluate("--hyp", tmp_path, "--ref", plain / "ref")
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"error: {tmp_path} is a directory, not a file",
    )
    result = evaluate("--hyp", plain / "hyp", "--ref", plain / "ref", "--write-hyp", tmp_path)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"error: {tmp_path} is a directory: name the file to write",
    )
