"""Translation task that trains on both R-Drop copies of each batch."""

import weakref

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from . import compat
from .criterion import LabelSmoothedCrossEntropyRDropCriterion
from .data_checks import check_dictionaries, check_max_tokens, check_split, missing_data_error
from .errors import UsageError
from .sample import duplicate_sample


@register_task("rdrop_translation", dataclass=TranslationConfig)
class RDropTranslationTask(TranslationTask):
    """``translation`` whose training step stacks each batch with itself along dim 0, so the
    two copies see different dropout masks in one forward pass. Validation, generation and
    ``--eval-bleu`` are exactly those of ``translation``."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_dictionaries(cfg.data, cfg.source_lang, cfg.target_lang)
        return super().setup_task(cfg, **kwargs)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        check_split(
            self.cfg.data,
            split,
            self.cfg.source_lang,
            self.cfg.target_lang,
            epoch=epoch,
            combine=combine,
        )
        try:
            return super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        except FileNotFoundError as e:
            raise missing_data_error(
                e, self.cfg.data, split, self.cfg.source_lang, self.cfg.target_lang
            ) from e

    def get_batch_iterator(
        self,
        dataset,
        max_tokens=None,
        max_sentences=None,
        max_positions=None,
        ignore_invalid_inputs=False,
        *args,
        **kwargs,
    ):
        checked = self.__dict__.setdefault("_rdrop_checked_datasets", weakref.WeakSet())
        if dataset not in checked:  # once per dataset, not every epoch
            split = next((name for name, d in self.datasets.items() if d is dataset), "data")
            check_max_tokens(dataset, split, max_tokens, max_positions, ignore_invalid_inputs)
            checked.add(dataset)
        return super().get_batch_iterator(
            dataset,
            max_tokens,
            max_sentences,
            max_positions,
            ignore_invalid_inputs,
            *args,
            **kwargs,
        )

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = compat.build_criterion(super().build_criterion, cfg, from_checkpoint)
        if not isinstance(criterion, LabelSmoothedCrossEntropyRDropCriterion):
            raise UsageError(
                "--task rdrop_translation needs --criterion label_smoothed_cross_entropy_rdrop "
                f"(got {getattr(cfg, '_name', type(criterion).__name__)}); "
                "for a baseline use --rdrop-alpha 0 or --task translation"
            )
        return criterion

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if criterion.rdrop_alpha > 0:
            sample = duplicate_sample(sample)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
