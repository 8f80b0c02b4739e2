"""Duplicating a fairseq batch along dim 0, so one forward pass runs both dropout copies."""

import torch

#: Key marking a sample as already holding both copies (so it is never duplicated twice).
DUPLICATED = "rdrop_duplicated"


def _concat_copies(value):
    if torch.is_tensor(value):
        return torch.cat([value, value], dim=0)
    if isinstance(value, dict):
        return {key: _concat_copies(item) for key, item in value.items()}
    return value


def duplicate_sample(sample):
    """Return a NEW sample whose ``net_input`` tensors and ``target`` hold two stacked copies.

    ``ntokens``/``nsentences`` and everything else are those of one copy; the caller's
    sample is left untouched.
    """
    if is_duplicated(sample):
        return sample
    doubled = dict(sample)
    doubled["net_input"] = _concat_copies(sample["net_input"])
    doubled["target"] = _concat_copies(sample["target"])
    doubled[DUPLICATED] = True
    return doubled


def is_duplicated(sample):
    return bool(sample.get(DUPLICATED, False))
