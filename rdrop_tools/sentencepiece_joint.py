"""Train one joint sentencepiece model on source and target text, and encode/decode with it.

rdrop-sentencepiece train --model PREFIX --vocab-size N [--model-type unigram|bpe] FILE...
rdrop-sentencepiece encode --model PREFIX.model --input IN --output OUT
rdrop-sentencepiece decode --model PREFIX.model --input IN --output OUT
"""

import argparse
import os
import sys

import sentencepiece as spm

from .errors import ToolError, exit_in_one_line
from .output_files import atomic_output
from .progress import progress
from .text_files import check_exists, count_lines, iter_lines


def train(args):
    for path in args.files:
        count_lines(path)  # exists and is UTF-8
    os.makedirs(os.path.dirname(os.path.abspath(args.model)), exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            input=",".join(args.files),
            model_prefix=args.model,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            input_sentence_size=args.input_sentence_size,
            shuffle_input_sentence=True,
            # fairseq's dictionary adds <s> <pad> </s> <unk> itself: keep only unk here
            bos_id=-1,
            eos_id=-1,
            unk_surface="<unk>",
            minloglevel=0 if sys.stderr.isatty() else 2,  # its own progress, on a terminal
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the text allows
        raise ToolError(  # noqa: B904 (sentencepiece's message is quoted)
            f"sentencepiece cannot train on {' '.join(args.files)}: {str(e).rpartition('] ')[2]}"
        )


def convert(args, encode):
    check_exists(args.model)
    check_exists(args.input)
    processor = spm.SentencePieceProcessor(model_file=args.model)
    with atomic_output(args.output) as (out,):
        for line in progress(iter_lines(args.input), os.path.basename(args.input)):
            if encode:
                out.write(" ".join(processor.encode(line, out_type=str)) + "\n")
            else:
                out.write(processor.decode(line.split()) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="learn a joint model on all FILEs")
    p.add_argument("--model", required=True, help="output prefix: PREFIX.model, PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    p.add_argument("--character-coverage", type=float, default=1.0)
    p.add_argument("--input-sentence-size", type=int, default=2_000_000)
    p.add_argument("files", nargs="+")
    for name in ("encode", "decode"):
        p = commands.add_parser(name, help=f"{name} one file, line by line")
        p.add_argument("--model", required=True, help="PREFIX.model")
        p.add_argument("--input", required=True)
        p.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    with exit_in_one_line():
        if args.command == "train":
            train(args)
        else:
            convert(args, encode=args.command == "encode")


if __name__ == "__main__":
    main()
