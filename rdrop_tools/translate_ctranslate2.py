"""Translate text with a CTranslate2 model written by rdrop-export --ctranslate2.

  rdrop-translate-ct2 MODEL_DIR --input SRC --output HYP [--spm SPM_MODEL] [--beam 5]
                      [--device cpu|cuda] [--compute-type default|int8|float32|...]

With ``--spm`` (the data directory's ``spm.model``), each raw line of SRC is encoded into
subwords, translated and decoded back to text, ready for ``rdrop-evaluate --hyp HYP --ref REF``.
Without it, SRC is already in the model's tokens (split on spaces) and HYP is too. One line of
HYP per line of SRC; HYP is written only when every line is translated. Decoding stops at 200
tokens, as fairseq-generate's default does.
"""

import argparse
import sys

from .errors import ToolError, exit_in_one_line
from .output_files import atomic_output
from .text_files import check_exists, read_lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--spm", help="the sentencepiece model the data was prepared with")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: CTranslate2's)")
    parser.add_argument(
        "--compute-type", default="default", help="e.g. int8 or float32 (default: the model's own)"
    )
    args = parser.parse_args(argv)
    try:
        import ctranslate2
    except ImportError:
        sys.exit(
            "error: rdrop-translate-ct2 needs ctranslate2: pip install 'rdrop-fairseq[ctranslate2]'"
        )
    import sentencepiece

    with exit_in_one_line():
        lines = read_lines(args.input)
        encode, decode = str.split, " ".join
        if args.spm:
            check_exists(args.spm)
            try:
                spm = sentencepiece.SentencePieceProcessor(model_file=args.spm)
            except (OSError, RuntimeError) as e:
                raise ToolError(f"{args.spm}: not a sentencepiece model ({e})") from e
            encode, decode = (lambda line: spm.encode(line, out_type=str)), spm.decode
        try:
            translator = ctranslate2.Translator(
                args.model_dir,
                device=args.device,
                compute_type=args.compute_type,
                intra_threads=args.threads,
            )
        except (RuntimeError, ValueError) as e:
            raise ToolError(f"{args.model_dir}: cannot load a CTranslate2 model ({e})") from e
        with atomic_output(args.output) as (out,):
            for start in range(0, len(lines), args.batch_size):
                batch = [encode(line) for line in lines[start : start + args.batch_size]]
                results = translator.translate_batch(
                    batch, beam_size=args.beam, max_decoding_length=200
                )
                for result in results:
                    out.write(decode(result.hypotheses[0]) + "\n")


if __name__ == "__main__":
    main()
