"""`structured_logprobs`: the trainer's view of one or more fork-join trajectories — one forward with
the structured mask and layout positions, then the log-softmax of each response token under the logits
of the token before it. The function the demo, the tests and the verl actor all use; the reference
decoder's log-probs must equal it (DESIGN §4-5)."""

from __future__ import annotations

from typing import Sequence

import torch

from npr.attention import register_attention
from npr.layout import Layout
from npr.masks import attention_kwargs
from npr.scoring import log_probs


def structured_logprobs(model, layouts: Layout | Sequence[Layout]) -> torch.Tensor | list[torch.Tensor]:
    """Response-token log-probs of each layout, from ONE structured forward of `model` over the layouts
    packed into one row (no padding). Returns a tensor [L - response_start] for one Layout, a list of
    them for several; float64 for a float64 model, float32 otherwise. Gradients flow when enabled.

    The structure reaches the attention "npr" only through `npr.masks.attention_kwargs` (the same path
    as the verl actor): a flex-attention BlockMask on CUDA, one dense mask per sequence elsewhere."""
    single = isinstance(layouts, Layout)
    items = [layouts] if single else list(layouts)
    if not items or not all(isinstance(x, Layout) for x in items):
        raise TypeError("structured_logprobs expects a Layout or a non-empty sequence of Layouts "
                        "(npr.layout.build_layout)")
    for i, layout in enumerate(items):
        if layout.response_start < 1:
            raise ValueError(f"layout {i} has response_start {layout.response_start}; the first response token "
                             "needs a token before it (a prompt of at least one token)")
    device = next(model.parameters()).device
    kwargs = {k: v.to(device) for k, v in attention_kwargs(items).items()}
    ids = torch.cat([layout.token_ids for layout in items]).to(device)
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = register_attention()
    try:
        logits = model(ids[None], **kwargs).logits[0]
    finally:
        config._attn_implementation = previous
    logprobs = log_probs(logits)
    out = []
    start = 0
    for layout in items:
        first = start + layout.response_start
        end = start + len(layout)
        out.append(logprobs[first - 1:end - 1].gather(1, ids[first:end, None])[:, 0])
        start = end
    return out[0] if single else out
