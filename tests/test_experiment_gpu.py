"""examples/translation/experiment-multi30k-gpu.sh at toy scale on the CPU (a tiny Transformer, 10
updates, a synthetic corpus), so that the GPU run works the first time: every file it must bring
back, results.json whole, and the pack within what a GPU run can return.

The toy options cost what can be cut without skipping a step of the script: 10 updates are two
epochs (5 updates each), so each run still validates, keeps a best checkpoint and logs a curve;
--max-target-positions 64 (the longest toy sentence is 40 tokens with its end) caps the beam search
of the barely trained model, which never ends a sentence, at 63 tokens instead of fairseq's
default 200 (about 1 s a lane instead of 4). What remains is the script's own processes: per lane
fairseq-train, fairseq-generate and common.sh's torch check, each importing torch or fairseq."""

import json
import math
import tarfile

import pytest

from rdrop_tools.training_logs import read_fairseq_log
from support import ROOT, run_cli
from support import corpus as synthetic_corpus

EXPERIMENT = ROOT / "examples" / "translation" / "experiment-multi30k-gpu.sh"
SYSTEMS = ("baseline", "rdrop", "rdrop_cutoff")
TEST_SENTENCES = 8
MAX_UPDATE = 10
TOY = [
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "1",
    "--encoder-embed-dim",
    "16",
    "--decoder-embed-dim",
    "16",
    "--encoder-ffn-embed-dim",
    "32",
    "--decoder-ffn-embed-dim",
    "32",
    "--encoder-attention-heads",
    "2",
    "--decoder-attention-heads",
    "2",
    "--max-tokens",
    "1024",
    "--max-source-positions",
    "64",
    "--max-target-positions",
    "64",
    "--lr",
    "5e-3",
    "--warmup-updates",
    "10",
    "--max-update",
    str(MAX_UPDATE),
]
SYSTEM_KEYS = {
    "train_command",
    "test_command",
    "updates",
    "epochs",
    "wall_s",
    "median_train_wps",
    "best_valid_bleu",
    "best_epoch",
    "final_train_nll_loss",
    "final_valid_nll_loss",
    "final_train_kl_loss",
    "bleu",
    "chrf",
    "tok_bleu",
    "n",
    "signature",
    "chrf_signature",
}
COMPARED_KEYS = {"delta_bleu", "delta_chrf", "p_value", "paired_command"}
pytestmark = pytest.mark.slow  # trains and runs the command-line tools


def fairseq_preprocess(*args):
    """fairseq-preprocess's ``main`` in this process (it only makes the fixture's data-bin; the
    script under test runs every command of its own as a command line)."""
    from fairseq import options
    from fairseq_cli import preprocess

    handlers = list(preprocess.logger.handlers)
    try:
        preprocess.main(options.get_preprocessing_parser().parse_args([str(a) for a in args]))
    finally:  # main adds a log file handler to its module's logger at every call
        for handler in set(preprocess.logger.handlers) - set(handlers):
            preprocess.logger.removeHandler(handler)
            handler.close()


@pytest.fixture(scope="module")
def toy_data_bin(tmp_path_factory):
    """A data-bin laid out as prepare-multi30k.sh leaves it, each word one '▁word' piece (what
    --remove-bpe sentencepiece undoes), and the raw references in raw/."""
    root = tmp_path_factory.mktemp("toy-multi30k")
    text, out = root / "text", root / "data-bin"
    text.mkdir()
    (out / "raw").mkdir(parents=True)
    splits = {"train": (200, 1), "valid": (8, 2), "test": (TEST_SENTENCES, 3)}
    for split, (n, seed) in splits.items():
        pairs = synthetic_corpus.pairs(n, seed)
        for lang in ("de", "en"):
            raw = [getattr(p, lang) for p in pairs]
            pieces = ["".join(" \u2581" + w for w in s.split()).strip() for s in raw]
            for folder, lines in ((out / "raw", raw), (text, pieces)):
                text_file = folder / f"{split}.{lang}"
                text_file.write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    fairseq_preprocess(
        "--source-lang",
        "de",
        "--target-lang",
        "en",
        "--joined-dictionary",
        "--trainpref",
        text / "train",
        "--validpref",
        text / "valid",
        "--testpref",
        text / "test",
        "--destdir",
        out,
        "--workers",
        "1",
    )
    (out / ".complete").touch()
    return out


@pytest.fixture(scope="module")
def experiment(toy_data_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment-gpu")
    paths = {name: root / name for name in ("work", "results", "pack")}
    proc = run_cli(
        "bash",
        EXPERIMENT,
        "--data-bin",
        toy_data_bin,
        "--work",
        paths["work"],
        "--results",
        paths["results"],
        "--pack",
        paths["pack"],
        "--",
        *TOY,
    )
    results = json.loads((paths["results"] / "results.json").read_text(encoding="utf-8"))
    return paths, results, proc


def test_results_folder_holds_every_file_and_no_checkpoint(experiment):
    paths, _, _ = experiment
    expected = {"results.json", "results.md", "curves.png"}
    for system in SYSTEMS:
        expected |= {f"{system}.test2016.hyp", f"{system}.train.log"}
    assert {p.name for p in paths["results"].iterdir()} == expected
    assert (paths["results"] / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for system in SYSTEMS:
        hyps = (paths["results"] / f"{system}.test2016.hyp").read_text(encoding="utf-8")
        assert len(hyps.splitlines()) == TEST_SENTENCES
        log = read_fairseq_log(paths["results"] / f"{system}.train.log")
        assert log["valid"] and all("bleu" in r for r in log["valid"])
        assert ("kl_loss" in log["train"][-1]) == (system != "baseline")
    table = (paths["results"] / "results.md").read_text(encoding="utf-8")
    assert all(f"| {system} |" in table for system in SYSTEMS)


def test_results_json_has_every_figure_and_the_exact_commands(experiment):
    _, results, _ = experiment
    assert set(results) == {
        "baseline",
        "systems",
        "mode",
        "lanes_wall_s",
        "experiment_wall_s",
        "equal_updates",
        "data",
        "machine",
        "commands",
    }
    assert results["baseline"] == "baseline" and list(results["systems"]) == list(SYSTEMS)
    assert results["mode"] == "concurrent" and results["equal_updates"] is True
    assert 0 < results["lanes_wall_s"] <= results["experiment_wall_s"]
    assert results["data"]["test_sentences"] == TEST_SENTENCES
    assert results["machine"]["device"] == "cpu" and results["machine"]["torch"]
    [command] = results["commands"]
    assert command.startswith("bash examples/translation/experiment-multi30k-gpu.sh --data-bin ")
    assert command.endswith(" -- " + " ".join(TOY))
    for name, system in results["systems"].items():
        assert set(system) == SYSTEM_KEYS | (COMPARED_KEYS if name != "baseline" else set())
        assert system["updates"] == MAX_UPDATE and system["n"] == TEST_SENTENCES
        assert 0 <= system["bleu"] <= 100 and 0 <= system["chrf"] <= 100
        figures = [v for k, v in system.items() if isinstance(v, (int, float))]
        assert all(math.isfinite(v) for v in figures)
        command = system["train_command"]
        assert command.startswith("fairseq-train ") and "--arch transformer_iwslt_de_en" in command
        assert "--max-update 1200" in command and command.endswith(f"--max-update {MAX_UPDATE}")
        assert "--cpu" in command and "--fp16" not in command
        assert "eval-multi30k.sh" in system["test_command"]
    commands = {name: system["train_command"] for name, system in results["systems"].items()}
    assert "--criterion label_smoothed_cross_entropy " in commands["baseline"]
    assert "--rdrop-alpha 2 " in commands["rdrop"] and "--rdrop-cutoff" not in commands["rdrop"]
    assert "--rdrop-alpha 2 --rdrop-cutoff 0.05 " in commands["rdrop_cutoff"]
    for name in ("rdrop", "rdrop_cutoff"):
        assert 0 < results["systems"][name]["p_value"] <= 1
        assert "--baseline-hyp" in results["systems"][name]["paired_command"]


def test_pack_is_what_a_gpu_run_can_bring_back(experiment):
    paths, results, _ = experiment
    packed = sorted(paths["pack"].iterdir())
    assert [p.name for p in packed] == ["logs.tar.gz", "results.tar.gz"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in packed)
    with tarfile.open(paths["pack"] / "results.tar.gz") as tar:
        names = {n for n in tar.getnames() if n != "results"}
        assert names == {f"results/{p.name}" for p in paths["results"].iterdir()}
        assert json.load(tar.extractfile("results/results.json")) == results
    with tarfile.open(paths["pack"] / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".pt")]
    for system in SYSTEMS:
        assert f"work/{system}/stdout.log" in names and f"work/{system}.test2016.gen.log" in names


def test_unprepared_data_bin_fails_with_one_clear_line(tmp_path):
    proc = run_cli(
        "bash",
        EXPERIMENT,
        "--data-bin",
        tmp_path / "missing",
        "--work",
        tmp_path / "w",
        check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "prepare-multi30k.sh" in proc.stderr and not (tmp_path / "w").exists()
