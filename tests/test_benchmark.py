"""scripts/benchmark.py on tiny sizes: the measuring functions run, the variants compute the same
losses, and the JSON holds consistent headline figures. No timing assertions."""

import importlib.util
import json

import pytest
import torch

from conftest import ROOT
from rdrop_fairseq.kl import symmetric_kl

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


@pytest.fixture(scope="module")
def result():
    return benchmark.run_benchmark(
        loss_sizes=[(64, 512)], step_tokens=32, step_vocab=64, device=torch.device("cpu"),
        dtype=torch.float32, threads=1, repeats=2, step_repeats=1, max_gb=1.0,
    )


def test_json_has_headline_figures(result):
    result = json.loads(json.dumps(result))
    row, step = result["loss"][0], result["step"]
    assert result["step_ratio"] == pytest.approx(step["ms"]["rdrop"] / step["ms"]["baseline"])
    assert result["kl_speedup_vs_official"] == pytest.approx(
        row["kl_overhead_ms"]["official"] / row["kl_overhead_ms"]["ours"]
    )
    extra = row["extra_peak_mb"]
    assert result["kl_extra_memory_vs_official"] == pytest.approx(
        (extra["ours"] - extra["fused_nll"]) / (extra["official"] - extra["nll"])
    )
    assert set(row["ms"]) == set(extra) == set(benchmark.LOSS_VARIANTS)
    assert all(mb > 0 for mb in extra.values())
    assert set(step["ms"]) == set(benchmark.STEP_VARIANTS)
    assert step["tokens_per_copy"] == 32
    assert {"cpu", "torch", "threads"} <= set(result["machine"])


def test_variants_agree_on_nll_and_kl(result):
    row = result["loss"][0]
    nll = row["nll_value"]
    assert nll["ours"] == pytest.approx(nll["nll"], rel=1e-5)
    assert nll["fused_nll"] == pytest.approx(nll["nll"], rel=1e-5)
    assert nll["official"] == pytest.approx(nll["nll"], rel=1e-6)
    assert row["kl_value"]["ours"] == pytest.approx(row["kl_value"]["official"], rel=1e-4)
    assert row["kl_value"]["ours"] > 0


def test_markdown_lists_sizes_and_steps(result):
    text = benchmark.markdown(result)
    assert "| 64 | 512 |" in text
    assert all(f"| {v} |" in text for v in benchmark.STEP_VARIANTS)


def test_oversized_loss_rows_are_skipped():
    row = benchmark.loss_row(16384, 40000, torch.device("cpu"), torch.float32, 1, 1, max_gb=12)
    assert "skipped" in row and "ms" not in row


def test_official_kl_masks_pad_positions_like_dropping_them():
    logits = torch.randn(2 * 3, 4, 7)
    pad_mask = torch.zeros(3, 4, 1, dtype=torch.bool)
    pad_mask[1, 2:] = True
    lprobs = torch.log_softmax(logits, -1)
    keep = ~pad_mask.squeeze(-1)
    expected = symmetric_kl(lprobs[:3][keep], lprobs[3:][keep])
    assert benchmark.official_kl(logits, pad_mask).item() == pytest.approx(expected.item(), rel=1e-5)
