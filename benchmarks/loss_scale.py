"""fp16 loss scale: updates of the first architecture, baseline and ours each from the same
initialisation on the same fresh random batches (train_step.py's setup), recording the loss and
fairseq's loss scale after every update."""

import gc
import math
import tempfile

import torch
from train_step import build_trainers, loss_scale, random_batch, train_step


def loss_scale_run(arch, tokens, device, updates, model_args=()):
    """``updates`` fp16 updates of baseline and ours, each from the same initialisation on the
    same random batches: the loss (None where fp16 overflowed) and loss scale after each."""
    runs = {}
    for variant in ("baseline", "rdrop"):
        with tempfile.TemporaryDirectory() as folder:
            dictionary, trainers = build_trainers(folder, arch, device, torch.float16, model_args)
        trainer = trainers[variant]
        losses, scales = [], []
        for update in range(updates):
            out = train_step(variant, trainer, random_batch(dictionary, tokens, seed=update))
            losses.append(None if out is None else float(out["loss"]))
            scales.append(loss_scale(trainer))
        runs[variant] = {"loss": losses, "loss_scale": scales}
        del trainers, trainer
        gc.collect()
    halvings = [
        math.log2(b / r)
        for b, r in zip(runs["baseline"]["loss_scale"], runs["rdrop"]["loss_scale"])
    ]
    return {
        "arch": arch,
        "tokens_per_copy": random_batch(dictionary, tokens)["ntokens"],
        "vocab": len(dictionary),
        "updates": updates,
        "runs": runs,
        "losses_finite": {
            v: all(x is None or math.isfinite(x) for x in r["loss"])
            and any(x is not None for x in r["loss"])
            for v, r in runs.items()
        },
        "overflows": {v: sum(x is None for x in r["loss"]) for v, r in runs.items()},
        "final_loss": {
            v: next((x for x in reversed(r["loss"]) if x is not None), None)
            for v, r in runs.items()
        },
        "final_loss_scale": {v: r["loss_scale"][-1] for v, r in runs.items()},
        "max_halvings_below_baseline": max(halvings),
    }
