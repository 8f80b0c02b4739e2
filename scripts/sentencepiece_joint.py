#!/usr/bin/env python
"""Train one joint sentencepiece model on source and target text, and encode/decode with it.

  sentencepiece_joint.py train --model PREFIX --vocab-size N [--model-type unigram|bpe] FILE...
  sentencepiece_joint.py encode --model PREFIX.model --input IN --output OUT
  sentencepiece_joint.py decode --model PREFIX.model --input IN --output OUT
"""

import argparse
import os
import sys

import sentencepiece as spm


def fail(message):
    sys.exit(f"error: {message}")


def check_readable(path):
    if not os.path.isfile(path):
        fail(f"no such file: {path}")


def train(args):
    for path in args.files:
        check_readable(path)
    os.makedirs(os.path.dirname(os.path.abspath(args.model)), exist_ok=True)
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
        minloglevel=2,
    )


def convert(args, encode):
    check_readable(args.model)
    check_readable(args.input)
    processor = spm.SentencePieceProcessor(model_file=args.model)
    tmp = args.output + ".tmp"
    try:
        with open(args.input, encoding="utf-8") as fin, open(tmp, "w", encoding="utf-8") as fout:
            for line in fin:
                line = line.rstrip("\n")
                if encode:
                    fout.write(" ".join(processor.encode(line, out_type=str)) + "\n")
                else:
                    fout.write(processor.decode(line.split()) + "\n")
    except UnicodeDecodeError as e:
        os.remove(tmp)
        fail(f"{args.input} is not valid UTF-8 ({e.reason} at byte {e.start})")
    os.replace(tmp, args.output)


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
    if args.command == "train":
        train(args)
    else:
        convert(args, encode=args.command == "encode")


if __name__ == "__main__":
    main()
