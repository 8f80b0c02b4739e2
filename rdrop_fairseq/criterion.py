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

from .cli_errors import UsageError
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
        lprobs, target = self.get_nonpad_lprobs_and_target(model, net_output, sample)
        loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps)
        copy_rows = lprobs.size(0) // 2  # rows [0, n) are copy 1, [n, 2n) copy 2
        kl_loss = symmetric_kl(lprobs[:copy_rows], lprobs[copy_rows:])
        loss = loss + self.rdrop_alpha * kl_loss

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
            logging_output["n_correct"] = utils.item(lprobs.argmax(1).eq(target).sum())
            logging_output["total"] = target.numel()
        return loss, sample_size, logging_output

    def get_nonpad_lprobs_and_target(self, model, net_output, sample):
        """Log-probabilities (fp32) and targets of the non-pad target positions only: pad rows
        are dropped before the vocabulary-sized log-softmax. Rows keep batch order."""
        logits = net_output[0]
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            logits = logits[:, self.ignore_prefix_size :]
            target = target[:, self.ignore_prefix_size :]
        keep = target.ne(self.padding_idx)
        lprobs = model.get_normalized_probs(
            (logits[keep],) + tuple(net_output[1:]), log_probs=True
        )
        return lprobs.float(), target[keep]

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if any("kl_loss" in log for log in logging_outputs):
            kl_sum = sum(log.get("kl_loss", 0) for log in logging_outputs)
            ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
            metrics.log_scalar("kl_loss", kl_sum / ntokens / math.log(2), ntokens, round=3)
