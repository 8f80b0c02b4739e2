"""benchmarks/ on tiny sizes, on the code paths of a CUDA run except the CUDA events: every loss
variant, the profiler, the memory workers, fp16 training steps through fairseq's Trainer and loss
scaler for both architectures, and the loss-scale run. The variants compute the same losses and
the JSON holds consistent headline figures. No timing assertions.

The benchmark modules are scripts beside each other (``python benchmarks/run.py``): this module
puts benchmarks/ on sys.path and imports them."""

import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from support import ROOT
from support.tiny_model import TINY_TRANSFORMER

sys.path.insert(0, str(ROOT / "benchmarks"))
import loss  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import train_step  # noqa: E402

#: the tiny Transformer's dimensions, given to each benchmarked architecture
TINY_DIMENSIONS = [
    a
    for i, a in enumerate(TINY_TRANSFORMER)
    if "--arch" not in TINY_TRANSFORMER[max(0, i - 1) : i + 1]
]


@pytest.fixture(scope="module")
def result():
    return run.run_benchmark(
        loss_sizes=[(64, 512)],
        archs=list(train_step.ARCH_VOCAB),
        step_tokens=32,
        device=torch.device("cpu"),
        dtype=torch.float16,
        threads=1,
        repeats=2,
        step_repeats=1,
        max_gb=1.0,
        loss_scale_updates=3,
        model_args=TINY_DIMENSIONS,
    )


def test_the_model_options_shrink_each_benchmarked_architecture(tmp_path):
    """``model_args`` (here the tiny Transformer's options without its --arch) reach the step
    models after the benchmark's --arch: each architecture keeps its name and vocabulary, and is
    built with one 16-wide layer each side instead of its own size (the big WMT model would
    otherwise be 6+6 layers of 1 024)."""
    for arch, vocab in train_step.ARCH_VOCAB.items():
        (tmp_path / arch).mkdir()
        _, trainers = train_step.build_trainers(
            tmp_path / arch, arch, torch.device("cpu"), torch.float16, TINY_DIMENSIONS
        )
        model = trainers["rdrop"].model
        assert model.cfg.arch == arch
        assert len(model.encoder.layers) == len(model.decoder.layers) == 1
        assert model.encoder.embed_tokens.weight.shape == (vocab, 16)
        assert model.decoder.embed_tokens is model.encoder.embed_tokens  # --share-all-embeddings
        assert model.encoder.layers[0].fc1.weight.shape == (32, 16)
        assert model.encoder.layers[0].self_attn.num_heads == 2


@pytest.mark.slow
def test_json_has_headline_figures(result):
    result = json.loads(json.dumps(result))
    row, step = result["loss"][0], result["steps"][0]
    assert result["step_ratio"] == pytest.approx(step["ms"]["rdrop"] / step["ms"]["baseline"])
    overhead = row["kl_overhead_ms"]
    if overhead["ours"] > 0:
        assert result["kl_speedup_vs_official"] == pytest.approx(
            overhead["official"] / overhead["ours"]
        )
    else:  # no measurable KL time at this size: no ratio, and the table says so
        assert result["kl_speedup_vs_official"] is None
        assert "adds no measurable time" in report.markdown(result)
    extra = row["extra_peak_mb"]
    assert result["kl_extra_memory_vs_official"] == pytest.approx(
        (extra["ours"] - extra["fused_nll"]) / (extra["official"] - extra["nll"])
    )
    assert set(row["ms"]) == set(extra) == set(row["kernel_launches"]) == set(loss.LOSS_VARIANTS)
    assert all(mb > 0 for mb in extra.values())
    assert all(n is None for n in row["kernel_launches"].values())  # counted on CUDA only
    assert [s["arch"] for s in result["steps"]] == list(train_step.ARCH_VOCAB)
    for step in result["steps"]:
        assert set(step["ms"]) == set(train_step.STEP_VARIANTS)
        assert step["tokens_per_copy"] == 32 and step["precision"] == "float16"
        assert step["vocab"] == train_step.ARCH_VOCAB[step["arch"]]
    assert {"cpu", "torch", "threads", "device"} <= set(result["machine"])
    assert result["machine"]["threads"] == 1 and result["machine"]["device"] == "cpu"


@pytest.mark.slow
def test_variants_agree_on_nll_and_kl(result):
    row = result["loss"][0]
    nll, kl = row["nll_value"], row["kl_value"]
    for variant in loss.LOSS_VARIANTS:
        assert nll[variant] == pytest.approx(nll["nll"], rel=1e-4), variant
    assert kl["ours"] == pytest.approx(kl["official"], rel=1e-3)
    assert kl["ours_torch"] == pytest.approx(kl["official"], rel=1e-3)
    assert kl["ours"] > 0


@pytest.mark.slow
def test_fp16_loss_scale_run_goes_through_fairseqs_scaler(result):
    scale_run = result["loss_scale"]
    assert scale_run["updates"] == 3 and set(scale_run["runs"]) == {"baseline", "rdrop"}
    for variant, record in scale_run["runs"].items():
        assert len(record["loss"]) == len(record["loss_scale"]) == 3
        assert all(scale > 0 for scale in record["loss_scale"])  # fp16: a loss scaler exists
        assert scale_run["losses_finite"][variant]
    # R-Drop's loss sums the NLL of both copies per target token of one copy: about twice the
    # baseline's, which averages over the doubled batch
    ratio = scale_run["final_loss"]["rdrop"] / scale_run["final_loss"]["baseline"]
    assert 1.5 < ratio < 2.5
    assert scale_run["max_halvings_below_baseline"] == max(
        math.log2(b / r)
        for b, r in zip(
            scale_run["runs"]["baseline"]["loss_scale"], scale_run["runs"]["rdrop"]["loss_scale"]
        )
    )


@pytest.mark.slow
def test_markdown_lists_sizes_steps_and_loss_scale(result, tmp_path):
    report.write_results(tmp_path / "cpu.json", result)
    assert json.loads((tmp_path / "cpu.json").read_text()) == json.loads(json.dumps(result))
    text = (tmp_path / "cpu.md").read_text()
    assert text == report.markdown(result)
    assert "| 64 | 512 |" in text
    assert all(f"| {v} |" in text for v in train_step.STEP_VARIANTS)
    assert all(arch in text for arch in train_step.ARCH_VOCAB)
    assert "fp16 loss scale" in text


def test_the_committed_results_tables_are_the_markdown_of_their_json():
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert results
    for path in results:
        assert report.markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text()


def test_oversized_loss_rows_are_skipped():
    row = run.loss_row(16384, 40000, torch.device("cpu"), torch.float32, 1, 1, max_gb=12)
    assert "skipped" in row and "ms" not in row


def test_only_gpu_kernels_count_as_launches():
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [
        SimpleNamespace(device_type=cuda, name="triton_rdrop_fwd"),
        SimpleNamespace(device_type=cuda, name="Memset (Device)"),
        SimpleNamespace(device_type=cuda, name="Memcpy DtoH (Device -> Pinned)"),
        SimpleNamespace(device_type=cpu, name="aten::log_softmax"),
    ]
    assert [loss.is_kernel(e) for e in events] == [True, False, False, False]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loss-sizes", "4096"], "is not NxV"),
        (["--loss-sizes", "0x10"], "N must be >= 1"),
        (["--loss-scale-updates", "5"], "needs --dtype float16"),
    ],
)
def test_bad_options_are_refused_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
