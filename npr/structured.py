"""`structured_logprobs`: the trainer's view of one or more fork-join trajectories — one forward with
the structured mask and layout positions, then the log-softmax of each response token under the logits
of the token before it. The function the demo, the tests and the verl actor all use; the reference
decoder's log-probs must equal it (DESIGN §4-5)."""

from __future__ import annotations

from typing import Sequence

import torch

from npr.layout import Layout, pack_layouts
from npr.masks import block_mask, dense_mask


def structured_logprobs(model, layouts: Layout | Sequence[Layout]) -> torch.Tensor | list[torch.Tensor]:
    """Response-token log-probs of each layout, from ONE structured forward of `model` over the layouts
    packed into one row (no padding). Returns a tensor [L - response_start] for one Layout, a list of
    them for several; float64 for a float64 model, float32 otherwise. Gradients flow when enabled.

    On CUDA the mask is a flex-attention BlockMask (attention implementation "npr"); elsewhere a dense
    boolean mask [L, L]."""
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
    packed = pack_layouts(items)
    ids = packed.token_ids.to(device)
    positions = packed.position_ids.to(device)
    if device.type == "cuda":
        from npr.attention import register_attention

        mask = block_mask(packed, device=device)
        previous = model.config._attn_implementation
        model.config._attn_implementation = register_attention()
        try:
            logits = model(ids[None], position_ids=positions[None], attention_mask=mask).logits[0]
        finally:
            model.config._attn_implementation = previous
    else:
        mask = dense_mask(packed, device=device)
        logits = model(ids[None], position_ids=positions[None], attention_mask=mask[None, None]).logits[0]
    logprobs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
    out = []
    start = 0
    for layout in items:
        first = start + layout.response_start
        end = start + len(layout)
        out.append(logprobs[first - 1:end - 1].gather(1, ids[first:end, None])[:, 0])
        start = end
    return out[0] if single else out
