"""The transformers attention implementation "npr": attention under an arbitrary boolean mask
[B, 1, Q, KV] (dense, SDPA) or a flex-attention BlockMask, with grouped-query heads folded into the
query axis so K/V are never repeated. Used by the reference decoder and the structured trainer forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from npr.once import Once

ATTENTION_NAME = "npr"


def npr_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [B, H, Q, D]; key/value [B, KVH, KV, D]; attention_mask bool [B|1, 1, Q, KV], a BlockMask
    or None (causal). Returns ([B, Q, H, D], None) as transformers expects."""
    batch, num_heads, q_len, head_dim = query.shape
    num_kv_heads = key.shape[1]
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    dropout = dropout if module.training else 0.0
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError:  # pragma: no cover - very old torch
        BlockMask = ()
    if BlockMask and isinstance(attention_mask, BlockMask):
        out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling,
                             enable_gqa=num_heads != num_kv_heads)
        return out.transpose(1, 2).contiguous(), None
    groups = num_heads // num_kv_heads
    # head h = kv_head * groups + g  ->  [B, KVH, groups * Q, D] with row g * Q + q
    q = query.reshape(batch, num_kv_heads, groups * q_len, head_dim)
    mask = attention_mask
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
    return out.reshape(batch, num_heads, q_len, head_dim).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, npr_attention_forward)
    try:  # when no mask is passed, build an SDPA-style boolean one for this implementation
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
    except (ImportError, AttributeError):  # pragma: no cover - older transformers
        pass


_ONCE = Once(_register_attention)


def register_attention() -> str:
    """Register "npr" with transformers' AttentionInterface (idempotent); returns the name."""
    _ONCE()
    return ATTENTION_NAME
