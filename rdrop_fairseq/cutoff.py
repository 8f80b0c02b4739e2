"""Token cutoff of the second copy, for R-Drop + Cutoff and SimCut (whose loss: docs/loss.md).

During training, each source token's and each target-input token's embedding in the second copy
of the stacked batch (rows ``[B, 2B)``) is zeroed with probability p; copy 1 (rows ``[0, B)``)
stays clean. The cut is where SimCut (Gao et al., 2022) makes it in its fork of fairseq: on the
token embedding, before the positions are added and before ``layernorm_embedding`` and dropout,
so a cut token keeps its position embedding. (SimCut's encoder masks ``embed_tokens(src)``, its
decoder masks ``embed_scale·embed_tokens(prev)`` after quant-noise and ``project_in_dim``;
those maps are per-token and linear without bias, so masking ``embed_tokens``'s output is the
same.) Here that is a forward hook on the encoder's and the decoder's ``embed_tokens``, so stock
fairseq models need no change. EOS is never cut: SimCut keeps the last source column (the EOS
under fairseq's left-padded source) and the first target-input column (the EOS that starts the
decoder input). Pad embeddings are zero and stay so. There is no 1/(1−p) rescaling.
"""

import contextlib

import torch

from .compat import unwrapped
from .errors import UsageError


def draw_cut_mask(tokens, p):
    """True where a token's embedding is cut: independently with probability ``p``."""
    return torch.rand(tokens.shape, device=tokens.device) < p


def cut_second_copy(tokens, embeddings, p, never_cut, draw=draw_cut_mask):
    """``embeddings`` (2B, T, C) of ``tokens`` (2B, T) with rows ``[B, 2B)`` cut: each token not
    in ``never_cut`` zeroed where ``draw(tokens[B:], p)`` is True. Rows ``[0, B)`` are returned
    unchanged, bit for bit."""
    if tokens.size(0) % 2:
        raise ValueError(
            f"a batch of two stacked copies has an even row count, got {tokens.size(0)}"
        )
    second = tokens[tokens.size(0) // 2 :]
    cut = draw(second, p)
    for token in never_cut:
        cut &= second.ne(token)
    cut = torch.cat([torch.zeros_like(cut), cut])
    return embeddings.masked_fill(cut.unsqueeze(-1), 0.0)


def token_embeddings(model):
    """The distinct ``embed_tokens`` modules of the model's encoder and decoder."""
    model = unwrapped(model)
    found = []
    for part in ("encoder", "decoder"):
        embed = getattr(getattr(model, part, None), "embed_tokens", None)
        if isinstance(embed, torch.nn.Module) and all(embed is not e for e in found):
            found.append(embed)
    if not found:
        raise UsageError(
            f"--rdrop-cutoff: {type(model).__name__} has no encoder.embed_tokens "
            "or decoder.embed_tokens to cut"
        )
    return found


@contextlib.contextmanager
def second_copy_cutoff(model, p, never_cut, draw=None):
    """Within the block, every call of the model's token embeddings cuts the second copy's rows
    (see :func:`cut_second_copy`); the hooks are removed on exit. ``draw`` defaults to this
    module's :func:`draw_cut_mask`, looked up at each call (tests replace it)."""

    def hook(module, inputs, output):
        return cut_second_copy(inputs[0], output, p, never_cut, draw or draw_cut_mask)

    handles = [embed.register_forward_hook(hook) for embed in token_embeddings(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
