"""Score translations with sacreBLEU, tokenized BLEU and compound-split BLEU.

  rdrop-evaluate --hyp FILE --ref FILE [--baseline-hyp FILE] [--json]
  rdrop-evaluate --generate-log FILE [--ref FILE] [--write-hyp FILE] [--baseline-hyp FILE] [--json]
  rdrop-evaluate --generate-log FILE [--baseline-generate-log FILE] --tokenized [--lang L]
                 [--raw-ref FILE] [--json] [--save-json FILE]

Hypotheses and references come from plain files (one sentence a line) or from the H-/T- lines of
a ``fairseq-generate`` log, in sentence-id order. By default they are plain (detokenized) text:
BLEU and chrF are sacreBLEU's on them as given, exactly as the ``sacrebleu`` command line computes
them, and the tokenized scores use a Moses tokenization of them. With ``--tokenized`` they are
Moses-tokenized text (e.g. ``fairseq-generate --remove-bpe`` output): the tokenized scores use them
as they are, and sacreBLEU and chrF see them Moses-detokenized (the references replaced by
``--raw-ref`` when given).

* ``tok_bleu``: BLEU on whitespace-separated tokens, as ``fairseq-score`` computes it (no
  smoothing; an ``<unk>`` in the reference never matches).
* ``compound_bleu``: the same after splitting hyphenated compounds, as fairseq's
  ``compound_split_bleu.sh`` does (``a-b`` -> ``a ##AT##-##AT## b``).
* ``p_value``: sacreBLEU's paired bootstrap resampling (1 000 resamples, seed 12 345, the
  ``sacrebleu --paired-bs`` defaults) of the BLEU difference to the baseline.
"""

import argparse
import json
import re

import sacremoses
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from .errors import ToolError, exit_in_one_line
from .moses import MosesTokenizer
from .output_files import atomic_output
from .text_files import read_lines

COMPOUND = re.compile(r"(\S)-(\S)")
# fairseq-score maps reference <unk> to an id that matches nothing; this token cannot be produced
UNMATCHABLE_UNK = "<unk\u241f>"


def read_generate_log(path):
    """The hypotheses (H-) and targets (T-) of a fairseq-generate log, in sentence-id order."""
    hyps, refs = {}, {}
    for line in read_lines(path):
        kind, _, rest = line.partition("-")
        if kind in ("H", "T") and "\t" in rest:
            fields = rest.split("\t")
            if not fields[0].isdigit():
                continue
            (hyps if kind == "H" else refs)[int(fields[0])] = fields[-1]
    if not hyps:
        raise ToolError(f"{path}: no H- lines: not a fairseq-generate log")
    if hyps.keys() != refs.keys():
        raise ToolError(f"{path}: H- and T- lines are for different sentences")
    ids = sorted(hyps)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def check_same_length(named_lists):
    counts = {name: len(lines) for name, lines in named_lists}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise ToolError(f"different numbers of sentences ({detail})")


def compound_split(lines):
    return [COMPOUND.sub(r"\1 ##AT##-##AT## \2", line) for line in lines]


def tokenized_bleu(hyps, refs):
    """BLEU of already tokenized text, equal to fairseq-score's."""
    refs = [" ".join(UNMATCHABLE_UNK if t == "<unk>" else t for t in r.split()) for r in refs]
    bleu = BLEU(tokenize="none", smooth_method="none", force=True)
    return bleu.corpus_score(hyps, [refs]).score


def evaluate(hyps, refs, baseline_hyps=None, tokenized=False, lang="en", raw_refs=None):
    """A dict of scores; see the module docstring."""
    if tokenized:
        detok = sacremoses.MosesDetokenizer(lang).detokenize
        tok_hyps, tok_refs = hyps, refs
        hyps = [detok(h.split()) for h in hyps]
        refs = raw_refs if raw_refs is not None else [detok(r.split()) for r in refs]
        if baseline_hyps is not None:
            baseline_hyps = [detok(h.split()) for h in baseline_hyps]
    else:
        tok = MosesTokenizer(lang).tokenize
        tok_hyps = [tok(h, return_str=True) for h in hyps]
        tok_refs = [tok(r, return_str=True) for r in refs]

    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hyps, [refs])
    chrf_score = chrf.corpus_score(hyps, [refs])
    result = {
        "n": len(hyps),
        "bleu": bleu_score.score,
        "signature": str(bleu.get_signature()),
        "bleu_verbose": bleu_score.format(),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        "tok_bleu": tokenized_bleu(tok_hyps, tok_refs),
        "compound_bleu": tokenized_bleu(compound_split(tok_hyps), compound_split(tok_refs)),
    }
    if baseline_hyps is not None and baseline_hyps == hyps:
        # sacreBLEU counts only resamples with a *larger* difference: the same output twice
        # would get p = 1/1001, a "significant" difference of zero
        result["baseline_bleu"], result["p_value"] = bleu_score.score, 1.0
    elif baseline_hyps is not None:
        test = PairedTest(
            [("baseline", baseline_hyps), ("system", hyps)],
            {"BLEU": BLEU()},
            references=[refs],
            test_type="bs",
        )
        _, scores = test()
        result["baseline_bleu"] = scores["BLEU"][0].score
        result["p_value"] = scores["BLEU"][1].p_value
    return result


def format_text(result):
    lines = [
        f"BLEU = {result['bleu']:.2f} ({result['signature']})",
        f"chrF2 = {result['chrf']:.2f} ({result['chrf_signature']})",
        f"tokenized BLEU = {result['tok_bleu']:.2f}",
        f"compound-split BLEU = {result['compound_bleu']:.2f}",
    ]
    if "p_value" in result:
        lines.append(
            f"baseline BLEU = {result['baseline_bleu']:.2f}, "
            f"paired bootstrap p = {result['p_value']:.4f}"
        )
    return "\n".join(lines)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hyp", help="hypotheses, one a line (needs --ref)")
    source.add_argument("--generate-log", help="fairseq-generate output (H-/T- lines)")
    parser.add_argument(
        "--ref",
        help="references, one a line (with --generate-log: used "
        "instead of its T- lines, e.g. the raw untokenized test file)",
    )
    parser.add_argument(
        "--write-hyp",
        metavar="FILE",
        help="also write the hypotheses, one a line in sentence order, to FILE",
    )
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-hyp", help="a baseline's hypotheses: adds p_value")
    baseline.add_argument("--baseline-generate-log", help="a baseline's fairseq-generate log")
    parser.add_argument(
        "--tokenized", action="store_true", help="hypotheses and references are Moses-tokenized"
    )
    parser.add_argument("--lang", default="en", help="target language for Moses (de)tokenization")
    parser.add_argument("--raw-ref", help="with --tokenized: untokenized references for sacreBLEU")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save-json", metavar="FILE", help="also write the JSON object to FILE")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.hyp is not None and args.ref is None:
        parser.error("--hyp needs --ref")
    if args.raw_ref and not args.tokenized:
        parser.error("--raw-ref needs --tokenized")
    with exit_in_one_line():
        if args.generate_log:
            hyps, log_refs = read_generate_log(args.generate_log)
            named = [(args.generate_log, hyps)]
            refs = log_refs
            if args.ref:
                refs = read_lines(args.ref)
                named.append((args.ref, refs))
        else:
            hyps, refs = read_lines(args.hyp), read_lines(args.ref)
            named = [(args.hyp, hyps), (args.ref, refs)]
        baseline = None
        if args.baseline_hyp:
            baseline = read_lines(args.baseline_hyp)
            named.append((args.baseline_hyp, baseline))
        elif args.baseline_generate_log:
            baseline, baseline_refs = read_generate_log(args.baseline_generate_log)
            if baseline_refs != (log_refs if args.generate_log else refs):
                raise ToolError(
                    f"{args.baseline_generate_log}: references differ from the system's"
                )
            named.append((args.baseline_generate_log, baseline))
        raw_refs = None
        if args.raw_ref:
            raw_refs = read_lines(args.raw_ref)
            named.append((args.raw_ref, raw_refs))
        check_same_length(named)
        if not hyps:
            raise ToolError(f"{' and '.join(name for name, _ in named)}: no sentences to score")
    result = evaluate(hyps, refs, baseline, args.tokenized, args.lang, raw_refs)
    with exit_in_one_line():  # an output that is a directory
        if args.write_hyp:
            with atomic_output(args.write_hyp) as (f,):
                f.writelines(h + "\n" for h in hyps)
        print(json.dumps(result, ensure_ascii=False) if args.json else format_text(result))
        if args.save_json:
            with atomic_output(args.save_json) as (f,):
                json.dump(result, f, ensure_ascii=False, indent=1)
                f.write("\n")


if __name__ == "__main__":
    main()
