"""scripts/benchmark.py on tiny sizes, on the code paths of a CUDA run except the CUDA events:
every loss variant, the profiler, the memory measurement, fp16 training steps through fairseq's
Trainer and loss scaler for both architectures, and the loss-scale run. The variants compute the
same losses and the JSON holds consistent headline figures. No timing assertions."""

import importlib.util
import json
import math
from types import SimpleNamespace

import pytest
import torch

from support import ROOT

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

TINY_MODEL = (
    "--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 16 --decoder-embed-dim 16 "
    "--encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 "
    "--decoder-attention-heads 2"
).split()


@pytest.fixture(scope="module")
def result():
    return benchmark.run_benchmark(
        loss_sizes=[(64, 512)], archs=list(benchmark.ARCH_VOCAB), step_tokens=32,
        device=torch.device("cpu"), dtype=torch.float16, threads=1, repeats=2, step_repeats=1,
        max_gb=1.0, loss_scale_updates=3, model_args=TINY_MODEL,
    )


def test_json_has_headline_figures(result):
    result = json.loads(json.dumps(result))
    row, step = result["loss"][0], result["steps"][0]
    assert result["step_ratio"] == pytest.approx(step["ms"]["rdrop"] / step["ms"]["baseline"])
    assert result["kl_speedup_vs_official"] == pytest.approx(
        row["kl_overhead_ms"]["official"] / row["kl_overhead_ms"]["ours"]
    )
    extra = row["extra_peak_mb"]
    assert result["kl_extra_memory_vs_official"] == pytest.approx(
        (extra["ours"] - extra["fused_nll"]) / (extra["official"] - extra["nll"])
    )
    assert set(row["ms"]) == set(extra) == set(row["kernel_launches"]) == set(benchmark.LOSS_VARIANTS)
    assert all(mb > 0 for mb in extra.values())
    assert all(n is None for n in row["kernel_launches"].values())  # counted on CUDA only
    assert [s["arch"] for s in result["steps"]] == list(benchmark.ARCH_VOCAB)
    for step in result["steps"]:
        assert set(step["ms"]) == set(benchmark.STEP_VARIANTS)
        assert step["tokens_per_copy"] == 32 and step["precision"] == "float16"
        assert step["vocab"] == benchmark.ARCH_VOCAB[step["arch"]]
    assert {"cpu", "torch", "threads"} <= set(result["machine"])


def test_variants_agree_on_nll_and_kl(result):
    row = result["loss"][0]
    nll, kl = row["nll_value"], row["kl_value"]
    for variant in benchmark.LOSS_VARIANTS:
        assert nll[variant] == pytest.approx(nll["nll"], rel=1e-4), variant
    assert kl["ours"] == pytest.approx(kl["official"], rel=1e-3)
    assert kl["ours_torch"] == pytest.approx(kl["official"], rel=1e-3)
    assert kl["ours"] > 0


def test_fp16_loss_scale_run_goes_through_fairseqs_scaler(result):
    run = result["loss_scale"]
    assert run["updates"] == 3 and set(run["runs"]) == {"baseline", "rdrop"}
    for variant, record in run["runs"].items():
        assert len(record["loss"]) == len(record["loss_scale"]) == 3
        assert all(scale > 0 for scale in record["loss_scale"])  # fp16: a loss scaler exists
        assert run["losses_finite"][variant]
    # R-Drop's loss sums the NLL of both copies per target token of one copy: about twice the
    # baseline's, which averages over the doubled batch
    ratio = run["final_loss"]["rdrop"] / run["final_loss"]["baseline"]
    assert 1.5 < ratio < 2.5
    assert run["max_halvings_below_baseline"] == max(
        math.log2(b / r) for b, r in zip(run["runs"]["baseline"]["loss_scale"],
                                         run["runs"]["rdrop"]["loss_scale"]))


def test_markdown_lists_sizes_steps_and_loss_scale(result):
    text = benchmark.markdown(result)
    assert "| 64 | 512 |" in text
    assert all(f"| {v} |" in text for v in benchmark.STEP_VARIANTS)
    assert all(arch in text for arch in benchmark.ARCH_VOCAB)
    assert "fp16 loss scale" in text


def test_markdown_reads_the_committed_cpu_results():
    for path in sorted((ROOT / "benchmarks" / "results").glob("cpu-*.json")):
        text = benchmark.markdown(json.loads(path.read_text()))
        assert "Training step, transformer_iwslt_de_en" in text, path


def test_oversized_loss_rows_are_skipped():
    row = benchmark.loss_row(16384, 40000, torch.device("cpu"), torch.float32, 1, 1, max_gb=12)
    assert "skipped" in row and "ms" not in row


def test_only_gpu_kernels_count_as_launches():
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [SimpleNamespace(device_type=cuda, name="triton_rdrop_fwd"),
              SimpleNamespace(device_type=cuda, name="Memset (Device)"),
              SimpleNamespace(device_type=cuda, name="Memcpy DtoH (Device -> Pinned)"),
              SimpleNamespace(device_type=cpu, name="aten::log_softmax")]
    assert [benchmark.is_kernel(e) for e in events] == [True, False, False, False]


@pytest.mark.parametrize("argv, message", [
    (["--loss-sizes", "4096"], "is not NxV"),
    (["--loss-sizes", "0x10"], "N must be >= 1"),
    (["--loss-scale-updates", "5"], "needs --dtype float16"),
])
def test_bad_options_are_refused_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
