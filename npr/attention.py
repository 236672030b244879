"""The transformers attention implementation "npr": attention under the NPR visibility rule.

The structure comes only from what the caller passes: either per-token ids as model kwargs
(`npr.masks.attention_kwargs`; verl's actor path), rendered here as a flex-attention BlockMask on
CUDA and per-sequence dense boolean masks on CPU, or an explicit boolean mask [B, 1, Q, KV] / BlockMask as
`attention_mask` (the reference decoder). transformers builds no mask for "npr" (its mask function
returns None), so padding, packing and position jumps never turn into a wrong mask."""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from npr.masks import BLOCK_KEY, BRANCH_KEY, LENGTHS_KEY, block_mask_from_ids, dense_mask_from_ids, ids_from_kwargs
from npr.once import Once

ATTENTION_NAME = "npr"
FLEX_BLOCK_SIZE = 128


class DenseSegments(list):
    """CPU rendering of structure kwargs: (row, start, end, mask [l, l] bool) per sequence, so the dense
    work is sum(l^2), not (sum l)^2 over a packed row; tokens outside every segment are padding."""


def _structure_mask(kwargs: dict, batch: int, q_len: int, kv_len: int, device: torch.device):
    """The structure kwargs rendered for this device (DenseSegments on CPU, a BlockMask elsewhere), or None.

    Rendered once per forward: cached on the kwargs' block-id tensor, which every layer receives."""
    block = kwargs.get(BLOCK_KEY)
    if block is None:
        return None
    branch, lens = kwargs.get(BRANCH_KEY), kwargs.get(LENGTHS_KEY)
    if branch is None or lens is None:
        raise ValueError(f"attention 'npr' got {BLOCK_KEY} without {BRANCH_KEY} and {LENGTHS_KEY}; "
                         "pass all of npr.masks.attention_kwargs(layouts)")
    if q_len != kv_len:
        raise ValueError(f"structure kwargs describe whole sequences, but the query has {q_len} tokens and the "
                         f"keys {kv_len} (a KV cache); pass an explicit attention_mask when decoding")
    shape = (batch, q_len, str(device))
    cached = getattr(block, "_npr_mask", None)  # (branch, lens, shape, mask), matched by identity
    if cached is not None and cached[0] is branch and cached[1] is lens and cached[2] == shape:
        return cached[3]
    ids = [t.to(device, non_blocking=True) for t in (block, branch, lens)]
    block_id, branch_id, seq_id = ids_from_kwargs(*ids, num_rows=batch, length=q_len)  # validates the fit
    if device.type == "cpu":
        mask = DenseSegments()
        offset = 0
        for index, length in enumerate(ids[2].reshape(-1).tolist()):
            piece = slice(offset, offset + length)
            row, start = (0, offset) if batch == 1 else (index, 0)
            mask.append((row, start, start + length, dense_mask_from_ids(ids[0][None, piece], ids[1][None, piece])[0]))
            offset += length
    else:
        mask = block_mask_from_ids(block_id, branch_id, seq_id, block_size=FLEX_BLOCK_SIZE)
    block._npr_mask = (branch, lens, shape, mask)
    return mask


def _sequences_from_positions(position_ids, batch: int, q_len: int, kv_len: int) -> dict | None:
    """Without structure kwargs or a mask, a packed row [1, L] whose positions restart at 0 holds several
    sequences (verl's packing of unstructured samples): kwargs of plain causal sequences split there,
    cached on the position tensor. None when there is nothing to split (one sequence, a cache, rows)."""
    if position_ids is None or batch != 1 or q_len != kv_len or position_ids.shape[-1] != q_len:
        return None
    cached = getattr(position_ids, "_npr_sequences", None)
    if cached is not None:
        return cached or None
    flat = position_ids.reshape(-1, q_len)[0]
    starts = torch.nonzero(flat == 0).reshape(-1).tolist()
    kwargs = {}
    if starts and starts[0] == 0 and len(starts) > 1:
        bounds = starts + [q_len]
        zeros = torch.zeros(q_len, dtype=torch.long, device=flat.device)
        lens = torch.tensor([b - a for a, b in zip(bounds, bounds[1:])], dtype=torch.long, device=flat.device)
        kwargs = {BLOCK_KEY: zeros, BRANCH_KEY: zeros.clone(), LENGTHS_KEY: lens}
    position_ids._npr_sequences = kwargs
    return kwargs or None


def _sdpa(query, key, value, mask, scaling, dropout):
    """SDPA under a boolean mask [B|1, 1, Q, KV] or None (causal), GQA folded into the query axis so
    K/V are never repeated. query [B, H, Q, D] -> [B, H, Q, D]."""
    batch, num_heads, q_len, head_dim = query.shape
    num_kv_heads = key.shape[1]
    groups = num_heads // num_kv_heads
    # head h = kv_head * groups + g  ->  [B, KVH, groups * Q, D] with row g * Q + q
    q = query.reshape(batch, num_kv_heads, groups * q_len, head_dim)
    if mask is None:
        is_causal = q_len > 1
        if groups > 1 and is_causal:
            kv_len = key.shape[2]
            causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
            mask, is_causal = causal.repeat(groups, 1), False
    else:
        is_causal = False
        if mask.dtype != torch.bool:
            mask = mask > torch.finfo(mask.dtype).min / 2 if mask.is_floating_point() else mask.bool()
        if groups > 1:
            mask = mask.repeat(1, 1, groups, 1)
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                         is_causal=is_causal)
    return out.reshape(batch, num_heads, q_len, head_dim)


def npr_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [B, H, Q, D]; key/value [B, KVH, KV, D]; structure kwargs (npr.masks.attention_kwargs) or
    attention_mask bool [B|1, 1, Q, KV], a BlockMask, or None: causal, per sequence where a packed row's
    position_ids restart at 0 (unstructured samples; right padding only). Returns ([B, Q, H, D], None).

    Raises ValueError when both structure kwargs and an explicit 4-D mask are given."""
    batch, num_heads, q_len, head_dim = query.shape
    num_kv_heads = key.shape[1]
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    if attention_mask is None and BLOCK_KEY not in kwargs:
        kwargs = _sequences_from_positions(kwargs.get("position_ids"), batch, q_len, key.shape[2]) or kwargs
    structure = _structure_mask(kwargs, batch, q_len, key.shape[2], query.device)
    if structure is not None:
        if attention_mask is not None:
            raise ValueError("attention 'npr' got both structure kwargs and an attention_mask; pass one of them")
        attention_mask = structure
    dropout = dropout if module.training else 0.0
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if isinstance(attention_mask, BlockMask):
        flex = _compiled_flex_attention() if query.device.type == "cuda" else flex_attention
        out = flex(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=num_heads != num_kv_heads)
        return out.transpose(1, 2).contiguous(), None
    if isinstance(attention_mask, DenseSegments):
        return _dense_segments(query, key, value, attention_mask, scaling, dropout), None
    out = _sdpa(query, key, value, attention_mask, scaling, dropout)
    return out.transpose(1, 2).contiguous(), None


def _dense_segments(query, key, value, segments: DenseSegments, scaling, dropout) -> torch.Tensor:
    """Attention of each segment under its own mask, the pieces concatenated (zeros for padding).
    Concatenating rather than writing into a zero tensor keeps the backward at the segments' size:
    a slice assignment per segment costs a full-size gradient buffer each (O(N * L) for N sequences).
    Returns [B, Q, H, D]."""
    batch, num_heads, q_len, head_dim = query.shape
    by_row: list[list[tuple[int, int, torch.Tensor]]] = [[] for _ in range(batch)]
    for row, start, end, mask in segments:
        part = (slice(row, row + 1), slice(None), slice(start, end))
        by_row[row].append((start, end, _sdpa(query[part], key[part], value[part], mask[None, None], scaling, dropout)))
    rows = []
    for pieces in by_row:
        parts, at = [], 0
        for start, end, out in sorted(pieces, key=lambda p: p[0]):
            if start > at:
                parts.append(query.new_zeros(1, num_heads, start - at, head_dim))
            parts.append(out)
            at = end
        if at < q_len:
            parts.append(query.new_zeros(1, num_heads, q_len - at, head_dim))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous()


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention():
    """flex_attention compiled once (uncompiled, it materialises the scores); NPR_FLEX_COMPILE=0 disables."""
    from torch.nn.attention.flex_attention import flex_attention

    if os.environ.get("NPR_FLEX_COMPILE", "1") == "0":
        return flex_attention
    return torch.compile(flex_attention)


def no_mask(*args, **kwargs) -> None:
    """transformers mask function for "npr": build nothing (the attention owns the structure)."""
    return None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, npr_attention_forward)
    try:  # an explicit 4-D mask still passes through untouched; a 2-D padding mask becomes None
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, no_mask)
    except (ImportError, AttributeError):  # pragma: no cover - older transformers build no mask for it anyway
        pass


_ONCE = Once(_register_attention)


def register_attention() -> str:
    """Register "npr" with transformers' AttentionInterface (idempotent); returns the name."""
    _ONCE()
    return ATTENTION_NAME
