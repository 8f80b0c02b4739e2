"""The benchmark's results: a JSON file (every repeat, the machine, the configuration) and a
markdown table beside it."""

import json
import sys

from train_step import STEP_VARIANTS


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def loss_rows(result):
    lines = [
        "Loss level, fwd+bwd from (2N, V) logits; `ours` is the whole R-Drop loss (NLL of both "
        "copies + KL), `nll` the stock criterion's NLL alone; the KL overhead and extra peak "
        "memory of each implementation are taken over its own NLL (ours: `fused_nll`); "
        "`ours_torch` is ours on its PyTorch path; launches: GPU kernels per fwd+bwd.",
        "",
        "| N | V | nll ms | fused_nll ms | ours ms | ours_torch ms | official ms | ours / nll "
        "| KL ms ours | KL ms official | KL speedup (x) | nll peak MB | KL extra MB ours "
        "| KL extra MB official | memory ratio | launches nll / ours / ours_torch / official |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["loss"]:
        if "skipped" in row:
            lines.append(
                f"| {row['tokens']} | {row['vocab']} | skipped: {row['skipped']} |" + " |" * 13
            )
            continue
        ms, kl, mb, kl_mb = (
            row["ms"],
            row["kl_overhead_ms"],
            row["extra_peak_mb"],
            row["kl_extra_mb"],
        )
        launches = row["kernel_launches"]
        counts = [fmt(launches[v], "d") for v in ("nll", "ours", "ours_torch", "official")]
        lines.append(
            f"| {row['tokens']} | {row['vocab']} | {ms['nll']:.2f} | {ms['fused_nll']:.2f} "
            f"| {ms['ours']:.2f} | {ms['ours_torch']:.2f} | {ms['official']:.2f} "
            f"| {row['loss_ratio_vs_nll']['ours']:.2f} | {kl['ours']:.2f} | {kl['official']:.2f} "
            f"| {fmt(row['kl_speedup_vs_official'], '.2f')} | {mb['nll']:.0f} "
            f"| {kl_mb['ours']:.0f} | {kl_mb['official']:.0f} "
            f"| {row['kl_extra_memory_vs_official']:.3f} | {' / '.join(counts)} |"
        )
    return lines


def markdown(result):
    m, c = result["machine"], result["config"]
    lines = [
        f"R-Drop benchmark: {m['device']} ({m['cpu']}), torch {m['torch']}, "
        f"{m['threads']} threads, "
        f"{c['dtype']} logits, medians of {c['repeats']} (loss) and {c['step_repeats']} (step) "
        "interleaved repeats.",
        "",
    ]
    if "headline_size" in result or "step_ratio" in result:
        headline = []
        if "headline_size" in result:
            size, speedup = result["headline_size"], result["kl_speedup_vs_official"]
            kl_time = (
                f"the KL overhead is {speedup:.2f}x faster than the official formula's"
                if speedup is not None
                else "the KL term adds no measurable time over our NLL alone"
            )
            headline.append(
                f"at N={size['tokens']}, V={size['vocab']} {kl_time}, its extra peak memory "
                f"{result['kl_extra_memory_vs_official']:.3f}x of the official formula's"
            )
        if "step_ratio" in result:
            headline.append(f"training step R-Drop / baseline = {result['step_ratio']:.3f}")
        lines += ["Headline: " + "; ".join(headline) + ".", ""]
    if result["loss"]:
        lines += loss_rows(result)
    for step in result["steps"]:
        lines += [
            "",
            f"Training step, {step['arch']}, V={step['vocab']}, {step['tokens_per_copy']} target "
            f"tokens per copy, {step['precision']} (the baseline runs the doubled batch):",
            "",
            "| step | ms | ratio vs baseline |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {v} | {step['ms'][v]:.1f} | {step['ratio_vs_baseline'][v]:.3f} |"
            for v in STEP_VARIANTS
        ]
    if "loss_scale" in result:
        s = result["loss_scale"]
        lines += [
            "",
            f"fp16 loss scale, {s['arch']}, V={s['vocab']}, {s['tokens_per_copy']} target tokens "
            f"per copy, {s['updates']} updates from the same initialisation on the same batches: "
            f"at most {s['max_halvings_below_baseline']:g} halvings below the baseline's.",
            "",
            "| run | losses finite | overflows | final loss | final loss scale |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {v} | {s['losses_finite'][v]} | {s['overflows'][v]} "
            f"| {fmt(s['final_loss'][v], '.3f')} | {fmt(s['final_loss_scale'][v], 'g')} |"
            for v in s["runs"]
        ]
    return "\n".join(lines) + "\n"


def write_results(out, result):
    """``out`` (JSON) and the markdown table beside it (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"| wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
