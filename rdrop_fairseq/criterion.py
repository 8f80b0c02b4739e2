"""Label-smoothed cross-entropy with the R-Drop consistency term."""

import contextlib
import math
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel, FairseqDecoder
from fairseq.models.transformer import TransformerModelBase

from . import cutoff
from .backend import CHOICES as BACKEND_CHOICES
from .backend import LossBackend
from .compat import unwrapped
from .errors import UsageError
from .loss import MODES
from .sample import duplicate_sample

#: Largest --rdrop-alpha accepted: beyond it the KL term outweighs the NLL more than a
#: thousandfold and training no longer learns the targets (published values lie in 0.1-10).
MAX_ALPHA = 1000.0


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
    rdrop_cutoff: float = field(
        default=0.0,
        metadata={
            "help": "during training, zero each source and target-input token embedding of the "
            "second copy (EOS excepted) with this probability, before positions are added, as "
            "in Cutoff/SimCut; needs --rdrop-alpha > 0; 0 = off"
        },
    )
    rdrop_loss: ChoiceEnum(list(MODES)) = field(
        default="rdrop",
        metadata={
            "help": "rdrop: label-smoothed NLL of both copies + α·½[KL(P₁‖P₂)+KL(P₂‖P₁)]; "
            "simcut: label-smoothed NLL of the first (clean) copy + α·KL(P₁‖P₂), SimCut's loss"
        },
    )
    rdrop_backend: ChoiceEnum(list(BACKEND_CHOICES)) = field(
        default="auto",
        metadata={
            "help": "implementation of the training loss: auto: the Triton kernel on CUDA when "
            "it compiles and launches there, else PyTorch (with one warning); torch; triton "
            "(an error where it cannot run)"
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
    ``--rdrop-cutoff`` also cuts the second copy's token embeddings (R-Drop + Cutoff) and
    ``--rdrop-loss simcut`` switches to SimCut's loss: the label-smoothed NLL of the first (clean)
    copy + α·KL(P₁‖P₂). The definitions and how they are computed: docs/loss.md.
    Validation and inference use one copy and no KL, exactly like the stock criterion."""

    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        rdrop_alpha=5.0,
        rdrop_cutoff=0.0,
        rdrop_loss="rdrop",
        rdrop_backend="auto",
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.rdrop_alpha = checked_alpha(rdrop_alpha)
        if not (isinstance(rdrop_cutoff, (int, float)) and 0 <= rdrop_cutoff < 1):
            raise UsageError(
                f"--rdrop-cutoff must be a probability in [0, 1), got {rdrop_cutoff!r}"
            )
        if rdrop_cutoff > 0 and self.rdrop_alpha == 0:
            raise UsageError(
                "--rdrop-cutoff needs --rdrop-alpha > 0 (with 0 the criterion is "
                "the stock one, which runs one clean copy)"
            )
        self.rdrop_cutoff = float(rdrop_cutoff)
        self.rdrop_loss = str(rdrop_loss)
        self.loss_backend = LossBackend(str(rdrop_backend))

    def forward(self, model, sample, reduce=True):
        if not (model.training and self.rdrop_alpha > 0):
            return super().forward(model, sample, reduce=reduce)

        sample = duplicate_sample(sample)
        with self.second_copy_cutoff(model):
            net_output = model(**sample["net_input"])
        if outputs_log_softmax_of_logits(model):
            loss, nll_loss, kl_loss, n_correct, total = self.loss_from_logits(
                model, net_output, sample
            )
        else:
            loss, nll_loss, kl_loss, n_correct, total = self.loss_from_log_probs(
                model, net_output, sample
            )

        nsentences = sample["target"].size(0) // 2
        sample_size = nsentences if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            # per copy (simcut: the clean copy's), so that nll_loss/ntokens is per target token
            "nll_loss": nll_loss.data / (1 if self.simcut else 2),
            "kl_loss": kl_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if self.report_accuracy:
            logging_output["n_correct"] = utils.item(n_correct)
            logging_output["total"] = utils.item(total)
        return loss, sample_size, logging_output

    def loss_from_logits(self, model, net_output, sample):
        """The loss straight from the logits (see loss.py): the fast path. Pad positions are
        masked, not removed, so on CUDA nothing waits for the device."""
        logits = net_output[0]
        flat_logits = logits.reshape(-1, logits.size(-1))
        target = model.get_targets(sample, net_output)
        keep = self.counted_positions(target).reshape(-1)
        target = target.reshape(-1)
        copy_positions = target.numel() // 2  # copy 2's positions follow copy 1's, aligned
        loss, nll_loss, kl_loss = self.loss_backend(
            flat_logits,
            target[:copy_positions],
            keep[:copy_positions],
            self.eps,
            self.rdrop_alpha,
            self.rdrop_loss,
        )
        n_correct = total = None
        if self.report_accuracy:
            scored = self.scored_rows(copy_positions)
            predicted = flat_logits[scored].detach().argmax(1)
            n_correct = (predicted.eq(target[scored]) & keep[scored]).sum()
            total = keep[scored].sum()
        return loss, nll_loss, kl_loss, n_correct, total

    @property
    def simcut(self):
        return self.rdrop_loss == "simcut"

    def scored_rows(self, copy_rows):
        """The rows whose NLL the loss counts (and accuracy reports): both copies', or with
        SimCut the first copy's."""
        return slice(0, copy_rows) if self.simcut else slice(None)

    def second_copy_cutoff(self, model):
        """Cuts the second copy's token embeddings (see cutoff.py) with --rdrop-cutoff > 0."""
        if not self.rdrop_cutoff:
            return contextlib.nullcontext()
        dictionaries = [getattr(self.task, "source_dictionary", None), self.task.target_dictionary]
        never_cut = {i for d in dictionaries if d is not None for i in (d.eos(), d.pad())}
        return cutoff.second_copy_cutoff(model, self.rdrop_cutoff, never_cut)

    def loss_from_log_probs(self, model, net_output, sample):
        """The loss from ``model.get_normalized_probs`` (adaptive softmax, custom output layers)
        by :func:`training_loss` on the log-probabilities, whose log-softmax they are. Its
        gradient gains ``−p·Σg`` per row, which reaches no parameter while the output stays
        normalised: ``Σ p·∂(log p)/∂θ = ∂(Σ p)/∂θ = 0``."""
        lprobs, target = self.get_nonpad_lprobs_and_target(model, net_output, sample)
        copy_rows = lprobs.size(0) // 2  # rows [0, n) are copy 1, [n, 2n) copy 2
        every_row = target.new_ones(copy_rows, dtype=torch.bool)
        loss, nll_loss, kl_loss = self.loss_backend(
            lprobs,
            target[:copy_rows],
            every_row,
            self.eps,
            self.rdrop_alpha,
            self.rdrop_loss,
        )
        scored = self.scored_rows(copy_rows)
        n_correct = None
        if self.report_accuracy:
            n_correct = lprobs[scored].detach().argmax(1).eq(target[scored]).sum()
        return loss, nll_loss, kl_loss, n_correct, target[scored].numel()

    def get_nonpad_lprobs_and_target(self, model, net_output, sample):
        """Log-probabilities (fp32) and targets of the counted target positions only, rows in
        batch order. The output layer sees the whole (batch, time, ·) output, as the stock
        criterion gives it; an adaptive softmax's are computed here (its own are not
        differentiable)."""
        target = model.get_targets(sample, net_output)
        keep = self.counted_positions(target)
        decoder = getattr(unwrapped(model), "decoder", None)
        adaptive_softmax = getattr(decoder, "adaptive_softmax", None)
        if adaptive_softmax is not None:
            lprobs = adaptive_softmax_log_probs(adaptive_softmax, net_output[0])
        else:
            lprobs = model.get_normalized_probs(net_output, log_probs=True)
        return lprobs[keep].float(), target[keep]

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


def checked_alpha(alpha):
    """``--rdrop-alpha`` as a float, or a :class:`UsageError` for a value that cannot train."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise UsageError(f"--rdrop-alpha must be a finite number >= 0, got {alpha!r}")
    if alpha > MAX_ALPHA:
        raise UsageError(
            f"--rdrop-alpha {alpha:g} is too large: above {MAX_ALPHA:g} the KL term outweighs the "
            "NLL more than a thousandfold and training no longer learns the targets "
            "(usual values: 0.1 to 10)"
        )
    return float(alpha)


def adaptive_softmax_log_probs(adaptive_softmax, features):
    """Log-probabilities over the whole vocabulary of fairseq's ``AdaptiveSoftmax`` for
    ``features`` (..., C), as its ``get_log_prob`` computes them but differentiably (that writes
    into the log-softmax's output, which autograd refuses), with the dropout of its training
    forward: the head's log-softmax for the shortlist, each tail's plus its cluster's head entry."""
    x = adaptive_softmax.dropout_module(features.reshape(-1, features.size(-1)))
    head = adaptive_softmax.lsm(adaptive_softmax.head(x))
    shortlist = adaptive_softmax.cutoff[0]
    parts = [head[:, :shortlist]]
    for i, tail in enumerate(adaptive_softmax.tail):
        parts.append(adaptive_softmax.lsm(tail(x)) + head[:, shortlist + i, None])
    return torch.cat(parts, 1).view(*features.shape[:-1], -1)


def outputs_log_softmax_of_logits(model):
    """True when ``model.get_normalized_probs`` is fairseq's default: the log-softmax of
    ``net_output[0]`` (no adaptive softmax, no overriding model or decoder)."""
    model = unwrapped(model)
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
