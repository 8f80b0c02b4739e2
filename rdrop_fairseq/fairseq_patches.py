"""Two fixes to the fairseq builds that install on Python 3.11, applied when the plugin is imported.

1. Checkpoints under torch >= 2.6: ``torch.load`` defaults to ``weights_only=True``, but fairseq
   checkpoints pickle ``argparse.Namespace`` and numpy objects, so resuming and generation fail.
   fairseq's checkpoint module (only it) gets a ``torch`` whose ``load`` defaults to
   ``weights_only=False``, as upstream fairseq now passes explicitly. Checkpoints are trusted files
   the user trained; nothing else in the process changes.
2. Every sentence evaluated: fairseq main's ``data_utils.batch_by_size`` silently drops the last
   batch when its size is not a multiple of ``--required-batch-size-multiple`` (fairseq issues
   #5036, #5351), so ``fairseq-generate`` and validation skip up to 7 sentences. The wrapper
   appends the dropped tail as a final batch, as fairseq 0.12.2 did.
"""

import types

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.data import data_utils


class _TorchWithFullCheckpointLoad(types.ModuleType):
    """``torch`` as seen by ``fairseq.checkpoint_utils``: ``load`` defaults to the full unpickler."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(f, *args, **kwargs)


def _keep_last_batch(batch_by_size):
    def batch_by_size_keeping_last(
        indices,
        num_tokens_fn,
        num_tokens_vec=None,
        max_tokens=None,
        max_sentences=None,
        required_batch_size_multiple=1,
        fixed_shapes=None,
    ):
        indices = np.fromiter(indices, dtype=np.int64, count=-1) if not isinstance(
            indices, np.ndarray
        ) else indices
        batches = batch_by_size(
            indices,
            num_tokens_fn,
            num_tokens_vec=num_tokens_vec,
            max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
            fixed_shapes=fixed_shapes,
        )
        batched = sum(len(batch) for batch in batches)
        if fixed_shapes is None and batched < len(indices):
            batches = list(batches) + [indices[batched:]]
        return batches

    batch_by_size_keeping_last.patched_by_rdrop_fairseq = True
    return batch_by_size_keeping_last


def apply():
    if not isinstance(checkpoint_utils.torch, _TorchWithFullCheckpointLoad):
        checkpoint_utils.torch = _TorchWithFullCheckpointLoad("torch")
    if not getattr(data_utils.batch_by_size, "patched_by_rdrop_fairseq", False):
        data_utils.batch_by_size = _keep_last_batch(data_utils.batch_by_size)


apply()
