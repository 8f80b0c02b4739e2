"""The training step as fairseq-train runs it: fairseq's ``Trainer`` (with float16, fairseq's
FP16Optimizer and its dynamic loss scaler; with bfloat16, --bf16), Adam, random batches of
equal-length sentences of a given number of target tokens per copy, one model per architecture
(vocabulary: ``ARCH_VOCAB``): baseline = the stock task and criterion on the doubled batch (the
tensor sizes of R-Drop) vs rdrop (``rdrop_translation`` and our criterion, α 5) vs official
(fairseq's ``label_smoothed_cross_entropy_with_rdrop``, α 5). One model, interleaved repeats.
"""

import statistics
import tempfile
from pathlib import Path

import torch
from common import ALPHA, EPS, dtype_name, seconds_of
from fairseq import options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.criterions.label_smoothed_cross_entropy_with_rdrop import (
    RdropLabelSmoothedCrossEntropyCriterion,
)
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.tasks.translation import TranslationTask
from fairseq.trainer import Trainer

import rdrop_fairseq  # noqa: F401  (registers the rdrop_translation task and our criterion)

STEP_VARIANTS = ("baseline", "rdrop", "official")
#: shared vocabulary of each architecture's training-step model (IWSLT14 de-en, WMT14 en-de)
ARCH_VOCAB = {"transformer_iwslt_de_en": 10000, "transformer_vaswani_wmt_en_de_big": 32000}
STEP_WARMUPS = 2
SENTENCE_LENGTH = 32


def precision_options(dtype):
    return {torch.float16: ["--fp16"], torch.bfloat16: ["--bf16"]}.get(dtype, [])


def build_trainers(folder, arch, device, dtype, model_args=(), seed=1):
    """(dictionary, {step variant: fairseq Trainer}) for one model of ``arch`` with a shared
    vocabulary of ARCH_VOCAB[arch] symbols, configured from fairseq-train's options as the
    training recipes set them."""
    dictionary = Dictionary()
    for i in range(ARCH_VOCAB[arch] - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    for lang in ("de", "en"):
        dictionary.save(str(Path(folder) / f"dict.{lang}.txt"))
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [
            str(folder),
            "--task",
            "rdrop_translation",
            "-s",
            "de",
            "-t",
            "en",
            "--criterion",
            "label_smoothed_cross_entropy_rdrop",
            "--rdrop-alpha",
            str(ALPHA),
            "--label-smoothing",
            str(EPS),
            "--arch",
            arch,
            "--share-all-embeddings",
            "--optimizer",
            "adam",
            "--adam-betas",
            "(0.9, 0.98)",
            "--clip-norm",
            "0.0",
            "--lr",
            "5e-4",
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            "4000",
            "--warmup-init-lr",
            "1e-7",
            "--seed",
            str(seed),
            "--distributed-world-size",
            "1",
            *precision_options(dtype),
            *model_args,
            # fairseq keeps the flat fp32 copy of fp16 weights on CUDA: on CPU, one copy per weight
            *(["--cpu", "--fp16-no-flatten-grads"] if device.type == "cpu" else []),
        ],
    )
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(seed)
    rdrop_task = tasks.setup_task(cfg.task)
    stock_task = TranslationTask(cfg.task, rdrop_task.src_dict, rdrop_task.tgt_dict)
    model = rdrop_task.build_model(cfg.model)
    setups = {
        "baseline": (stock_task, LabelSmoothedCrossEntropyCriterion(stock_task, False, EPS)),
        "rdrop": (rdrop_task, rdrop_task.build_criterion(cfg.criterion)),
        "official": (
            stock_task,
            RdropLabelSmoothedCrossEntropyCriterion(stock_task, False, EPS, rdrop_alpha=ALPHA),
        ),
    }
    trainers = {v: Trainer(cfg, task, model, criterion) for v, (task, criterion) in setups.items()}
    return rdrop_task.source_dictionary, trainers


def random_batch(dictionary, tokens, seed=0):
    """A batch of ``tokens`` target tokens in sentences of SENTENCE_LENGTH, without padding."""
    g = torch.Generator().manual_seed(seed)
    bsz = max(1, tokens // SENTENCE_LENGTH)
    length = tokens // bsz
    src = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
    tgt = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
    src[:, -1] = tgt[:, -1] = dictionary.eos()
    prev = torch.cat([torch.full((bsz, 1), dictionary.eos()), tgt[:, :-1]], dim=1)
    return {
        "id": torch.arange(bsz),
        "nsentences": bsz,
        "ntokens": bsz * length,
        "net_input": {
            "src_tokens": src,
            "src_lengths": torch.full((bsz,), length),
            "prev_output_tokens": prev,
        },
        "target": tgt,
    }


def train_step(variant, trainer, batch):
    """One update of fairseq's Trainer; the logging output, None when fp16 overflowed."""
    if variant == "baseline":  # the stock criterion on a batch of R-Drop's tensor sizes
        batch = {
            **batch,
            "ntokens": 2 * batch["ntokens"],
            "nsentences": 2 * batch["nsentences"],
            "net_input": {k: torch.cat([v, v]) for k, v in batch["net_input"].items()},
            "target": torch.cat([batch["target"], batch["target"]]),
        }
    elif variant == "official":  # fairseq's criterion doubles net_input in place: give it a copy
        batch = {**batch, "net_input": dict(batch["net_input"])}
    return trainer.train_step([batch])


def loss_scale(trainer):
    scaler = getattr(trainer.optimizer, "scaler", None)
    return None if scaler is None else float(scaler.loss_scale)


def step_peak_bytes(variant, trainer, batch):
    """Peak GPU memory of one training step."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    train_step(variant, trainer, batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def time_train_steps(arch, tokens, device, dtype, repeats, model_args=()):
    """Interleaved training-step timings of the step variants on one model and one batch."""
    with tempfile.TemporaryDirectory() as folder:
        dictionary, trainers = build_trainers(folder, arch, device, dtype, model_args)
    batch = random_batch(dictionary, tokens)
    for variant in STEP_VARIANTS:
        for _ in range(STEP_WARMUPS):
            train_step(variant, trainers[variant], batch)
    seconds = {variant: [] for variant in STEP_VARIANTS}
    overflows = {variant: 0 for variant in STEP_VARIANTS}
    for r in range(repeats):
        for variant in STEP_VARIANTS[r % 3 :] + STEP_VARIANTS[: r % 3]:
            out = []
            seconds[variant].append(
                seconds_of(
                    lambda: out.append(train_step(variant, trainers[variant], batch)),  # noqa: B023
                    device,
                )
            )
            overflows[variant] += out[0] is None
    ms = {v: 1e3 * statistics.median(s) for v, s in seconds.items()}
    return {
        "arch": arch,
        "tokens_per_copy": batch["ntokens"],
        "vocab": len(dictionary),
        "precision": dtype_name(dtype),
        "ms": ms,
        "runs_ms": {v: [round(1e3 * t, 2) for t in s] for v, s in seconds.items()},
        "ratio_vs_baseline": {v: ms[v] / ms["baseline"] for v in STEP_VARIANTS},
        "overflowed_steps": overflows,
        "peak_gpu_mb": (
            {v: step_peak_bytes(v, trainers[v], batch) / 2**20 for v in STEP_VARIANTS}
            if device.type == "cuda"
            else None
        ),
    }
