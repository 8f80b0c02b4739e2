"""Label-smoothed cross-entropy with the R-Drop consistency term."""

import math
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
    label_smoothed_nll_loss,
)
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel, FairseqDecoder
from fairseq.models.transformer import TransformerModelBase

from .cli_errors import UsageError
from .fused_loss import fused_rdrop_loss
from .kl import symmetric_kl
from .sample import duplicate_sample


@dataclass
class LabelSmoothedCrossEntropyRDropCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    rdrop_alpha: float = field(
        default=5.0,
        metadata={
            "help": "weight α of the symmetric KL between the two dropout copies "
            "(paper: 5 for IWSLT14, 3-5 for WMT14); 0 trains exactly like "
            "label_smoothed_cross_entropy"
        },
    )


@register_criterion(
    "label_smoothed_cross_entropy_rdrop",
    dataclass=LabelSmoothedCrossEntropyRDropCriterionConfig,
)
class LabelSmoothedCrossEntropyRDropCriterion(LabelSmoothedCrossEntropyCriterion):
    """R-Drop (Liang et al., 2021): each training sentence goes through the model twice (the batch
    is stacked with itself, so dropout draws different masks per copy); the loss is the
    label-smoothed NLL of both copies plus α·½[KL(P₁‖P₂)+KL(P₂‖P₁)] summed over target tokens,
    and the gradient is normalised by the target tokens of ONE copy, as in the paper.
    Validation and inference use one copy and no KL, exactly like the stock criterion."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        rdrop_alpha=5.0,
    ):
        super().__init__(
            task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy
        )
        if not (isinstance(rdrop_alpha, (int, float)) and math.isfinite(rdrop_alpha)
                and rdrop_alpha >= 0):
            raise UsageError(f"--rdrop-alpha must be a finite number >= 0, got {rdrop_alpha!r}")
        self.rdrop_alpha = float(rdrop_alpha)

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.rdrop_alpha > 0):
            return super().forward(model, sample, reduce=reduce)

        sample = duplicate_sample(sample)
        net_output = model(**sample["net_input"])
        if outputs_log_softmax_of_logits(model):
            loss, nll_loss, kl_loss, n_correct, total = self.fused_loss(model, net_output, sample)
        else:
            loss, nll_loss, kl_loss, n_correct, total = self.generic_loss(model, net_output, sample)

        nsentences = sample["target"].size(0) // 2
        sample_size = nsentences if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            # the mean of the two copies, so that nll_loss/ntokens is per target token
            "nll_loss": nll_loss.data / 2,
            "kl_loss": kl_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = utils.item(n_correct)
            logging_output["total"] = total
        return loss, sample_size, logging_output

    def fused_loss(self, model, net_output, sample):
        """The loss straight from the logits, chunked (see fused_loss.py): the fast path."""
        logits = net_output[0]
        target = model.get_targets(sample, net_output)
        keep = self.counted_positions(target)
        pairs = keep.reshape(-1).nonzero().view(2, -1)  # copy 2's rows follow copy 1's, aligned
        flat_target = target.reshape(-1)[pairs[0]]
        flat_logits = logits.reshape(-1, logits.size(-1))
        loss, nll_loss, kl_loss = fused_rdrop_loss(
            flat_logits, pairs, flat_target, self.eps, self.rdrop_alpha
        )
        n_correct = None
        if self.report_accuracy:
            predicted = flat_logits.detach().index_select(0, pairs.view(-1)).argmax(1)
            n_correct = predicted.eq(flat_target.repeat(2)).sum()
        return loss, nll_loss, kl_loss, n_correct, pairs.numel()

    def generic_loss(self, model, net_output, sample):
        """The loss from ``model.get_normalized_probs`` (adaptive softmax, custom output layers)."""
        lprobs, target = self.get_nonpad_lprobs_and_target(model, net_output, sample)
        loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps)
        copy_rows = lprobs.size(0) // 2  # rows [0, n) are copy 1, [n, 2n) copy 2
        kl_loss = symmetric_kl(lprobs[:copy_rows], lprobs[copy_rows:])
        loss = loss + self.rdrop_alpha * kl_loss
        n_correct = lprobs.detach().argmax(1).eq(target).sum() if self.report_accuracy else None
        return loss, nll_loss, kl_loss, n_correct, target.numel()

    def get_nonpad_lprobs_and_target(self, model, net_output, sample):
        """Log-probabilities (fp32) and targets of the counted target positions only: pad rows
        are dropped before the vocabulary-sized log-softmax. Rows keep batch order."""
        target = model.get_targets(sample, net_output)
        keep = self.counted_positions(target)
        lprobs = model.get_normalized_probs(
            (net_output[0][keep],) + tuple(net_output[1:]), log_probs=True
        )
        return lprobs.float(), target[keep]

    def counted_positions(self, target):
        """Mask of the target positions the loss counts: not pad, not in --ignore-prefix-size."""
        keep = target.ne(self.padding_idx)
        keep[:, : self.ignore_prefix_size] = False
        return keep

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if any("kl_loss" in log for log in logging_outputs):
            kl_sum = sum(log.get("kl_loss", 0) for log in logging_outputs)
            ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
            metrics.log_scalar("kl_loss", kl_sum / ntokens / math.log(2), ntokens, round=3)


def outputs_log_softmax_of_logits(model):
    """True when ``model.get_normalized_probs`` is fairseq's default: the log-softmax of
    ``net_output[0]`` (no adaptive softmax, no overriding model or decoder)."""
    while hasattr(model, "module"):  # DDP wrappers
        model = model.module
    decoder = getattr(model, "decoder", None)
    return (
        isinstance(model, BaseFairseqModel)
        and isinstance(decoder, FairseqDecoder)
        and type(model).get_normalized_probs
        in (BaseFairseqModel.get_normalized_probs, TransformerModelBase.get_normalized_probs)
        and type(model).get_normalized_probs_scriptable
        is BaseFairseqModel.get_normalized_probs_scriptable
        and type(decoder).get_normalized_probs is FairseqDecoder.get_normalized_probs
        and type(decoder).get_normalized_probs_scriptable
        is FairseqDecoder.get_normalized_probs_scriptable
        and getattr(decoder, "adaptive_softmax", None) is None
    )
