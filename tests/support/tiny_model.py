"""A tiny real fairseq translation setup (dictionary, task, Transformer, criterion), built from
command-line arguments exactly as fairseq-train builds it."""

import torch
from fairseq import options, tasks
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import rdrop_fairseq  # noqa: F401  (registers the task and criterion)

TINY_TRANSFORMER = [
    "--arch",
    "transformer",
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
    "--dropout",
    "0.3",
    "--share-all-embeddings",
]

#: The tiny Transformer with an adaptive softmax output layer (which shares no embeddings).
TINY_ADAPTIVE_SOFTMAX = [arg for arg in TINY_TRANSFORMER if arg != "--share-all-embeddings"] + [
    "--adaptive-softmax-cutoff",
    "10,20",
]


def write_dictionary(folder, langs=("de", "en"), size=40):
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    for lang in langs:
        d.save(str(folder / f"dict.{lang}.txt"))
    return d


def train_args(
    folder,
    task="rdrop_translation",
    criterion="label_smoothed_cross_entropy_rdrop",
    extra=(),
    architecture=TINY_TRANSFORMER,
):
    """fairseq-train's arguments for the tiny setup on the data folder ``folder`` (which gets a
    dictionary if it has none)."""
    if not (folder / "dict.de.txt").exists():
        write_dictionary(folder)
    return [
        str(folder),
        "--task",
        task,
        "--criterion",
        criterion,
        "-s",
        "de",
        "-t",
        "en",
        "--label-smoothing",
        "0.1",
        "--cpu",
        *architecture,
        *extra,
    ]


def build(
    folder,
    task="rdrop_translation",
    criterion="label_smoothed_cross_entropy_rdrop",
    extra=(),
    architecture=TINY_TRANSFORMER,
):
    """Return (cfg, task, model, criterion) for a data folder, built as fairseq-train builds
    them from :func:`train_args`."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, train_args(folder, task, criterion, extra, architecture)
    )
    cfg = convert_namespace_to_omegaconf(args)
    task_obj = tasks.setup_task(cfg.task)
    model = task_obj.build_model(cfg.model)
    crit = task_obj.build_criterion(cfg.criterion)
    return cfg, task_obj, model, crit


def random_sample(dictionary, bsz=3, src_len=5, tgt_len=6, seed=0, pad_tail=True):
    """A collated-looking batch with right-padded targets of different lengths."""
    g = torch.Generator().manual_seed(seed)
    nspecial = dictionary.nspecial
    vocab = len(dictionary)
    src = torch.randint(nspecial, vocab, (bsz, src_len), generator=g)
    tgt = torch.randint(nspecial, vocab, (bsz, tgt_len), generator=g)
    tgt[:, -1] = dictionary.eos()
    if pad_tail:
        for i in range(1, bsz):  # sentence i loses i tokens to padding (left-shifted eos)
            tgt[i, tgt_len - 1 - i :] = dictionary.pad()
            tgt[i, tgt_len - 1 - i] = dictionary.eos()
    prev = torch.cat([torch.full((bsz, 1), dictionary.eos()), tgt[:, :-1]], dim=1)
    prev[tgt.eq(dictionary.pad())] = dictionary.pad()
    return {
        "id": torch.arange(bsz),
        "nsentences": bsz,
        "ntokens": int(tgt.ne(dictionary.pad()).sum()),
        "net_input": {
            "src_tokens": src,
            "src_lengths": torch.full((bsz,), src_len),
            "prev_output_tokens": prev,
        },
        "target": tgt,
    }
