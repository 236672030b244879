"""The one visibility rule (DESIGN §4), written once as a mask_mod predicate and rendered two ways:
a dense boolean mask (SDPA / eager, CPU, short sequences) and a flex-attention BlockMask.

q_idx sees kv_idx iff kv_idx <= q_idx, both lie in the same sequence, and they are not in
different branches of the same block."""

from __future__ import annotations

from typing import Any, Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_npr_mask_mod(block_id: torch.Tensor, branch_id: torch.Tensor, seq_id: torch.Tensor | None = None) -> MaskMod:
    """mask_mod(b, h, q_idx, kv_idx) -> bool for per-token ids of shape [L] (one or packed sequences)
    or [B, L] (a padded batch; mark padding with seq_id = -1 and it only sees itself)."""
    if block_id.shape != branch_id.shape or block_id.dim() not in (1, 2):
        raise ValueError(f"block_id and branch_id must share shape [L] or [B, L], got {tuple(block_id.shape)} "
                         f"and {tuple(branch_id.shape)}")
    if seq_id is None:
        seq_id = torch.zeros_like(block_id)
    elif seq_id.shape != block_id.shape:
        raise ValueError(f"seq_id shape {tuple(seq_id.shape)} differs from block_id shape {tuple(block_id.shape)}")
    batched = block_id.dim() == 2

    def mask_mod(b, h, q_idx, kv_idx):
        if batched:
            blk_q, blk_k = block_id[b, q_idx], block_id[b, kv_idx]
            br_q, br_k = branch_id[b, q_idx], branch_id[b, kv_idx]
            sq_q, sq_k = seq_id[b, q_idx], seq_id[b, kv_idx]
        else:
            blk_q, blk_k = block_id[q_idx], block_id[kv_idx]
            br_q, br_k = branch_id[q_idx], branch_id[kv_idx]
            sq_q, sq_k = seq_id[q_idx], seq_id[kv_idx]
        siblings = (blk_q == blk_k) & (br_q != 0) & (br_k != 0) & (br_q != br_k)
        padding_self = (sq_q < 0) & (q_idx == kv_idx)  # keeps softmax rows of padding finite
        return ((kv_idx <= q_idx) & (sq_q == sq_k) & (sq_q >= 0) & ~siblings) | padding_self

    return mask_mod


def _ids_of(layout: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    seq_id = getattr(layout, "seq_id", None)
    return layout.block_id, layout.branch_id, seq_id


def dense_mask(layout: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """BoolTensor [L, L] (True = may attend) for a Layout or PackedLayout; [B, L, L] for batched ids."""
    block_id, branch_id, seq_id = _ids_of(layout)
    if device is not None:
        block_id, branch_id = block_id.to(device), branch_id.to(device)
        seq_id = None if seq_id is None else seq_id.to(device)
    mod = make_npr_mask_mod(block_id, branch_id, seq_id)
    length = block_id.shape[-1]
    q = torch.arange(length, device=block_id.device)[:, None]
    kv = torch.arange(length, device=block_id.device)[None, :]
    if block_id.dim() == 1:
        return mod(torch.zeros((), dtype=torch.long), None, q, kv)
    return torch.stack([mod(torch.tensor(b), None, q, kv) for b in range(block_id.shape[0])])


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where allowed, the dtype's most negative value where not (for eager attention)."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)


def block_mask(layout: Any, *, block_size: int = 128, device: torch.device | str | None = None,
               num_heads: int | None = None):
    """flex-attention BlockMask of the same predicate, for a Layout / PackedLayout ([L]) or batched ids ([B, L])."""
    from torch.nn.attention.flex_attention import create_block_mask

    block_id, branch_id, seq_id = _ids_of(layout)
    device = device if device is not None else block_id.device
    block_id, branch_id = block_id.to(device), branch_id.to(device)
    seq_id = None if seq_id is None else seq_id.to(device)
    mod = make_npr_mask_mod(block_id, branch_id, seq_id)
    length = block_id.shape[-1]
    batch = block_id.shape[0] if block_id.dim() == 2 else None
    return create_block_mask(mod, B=batch, H=num_heads, Q_LEN=length, KV_LEN=length, device=device,
                             BLOCK_SIZE=block_size)


def render_block_mask(bm, mask_mod: MaskMod | None = None) -> torch.Tensor:
    """Token-level dense rendering of a BlockMask [B, H, Q, KV] as attention would use it: full blocks
    are all True, partial blocks apply the mask_mod, absent blocks are False. For tests and debugging."""
    mask_mod = mask_mod or bm.mask_mod
    q_len, kv_len = bm.seq_lengths
    bq, bkv = bm.BLOCK_SIZE
    from torch.nn.attention.flex_attention import BlockMask

    def blocks(num, idx):  # dense [B, H, nQ, nKV] of one kind of block
        return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=bm.BLOCK_SIZE, seq_lengths=bm.seq_lengths).to_dense()

    partial = blocks(bm.kv_num_blocks, bm.kv_indices)
    full = None if bm.full_kv_num_blocks is None else blocks(bm.full_kv_num_blocks, bm.full_kv_indices)
    num_b, num_h = partial.shape[:2]
    out = torch.zeros(num_b, num_h, q_len, kv_len, dtype=torch.bool, device=partial.device)
    q = torch.arange(q_len, device=partial.device)[:, None]
    kv = torch.arange(kv_len, device=partial.device)[None, :]
    for b in range(num_b):
        for h in range(num_h):
            exact = mask_mod(torch.tensor(b), torch.tensor(h), q, kv)
            pb = partial[b, h].repeat_interleave(bq, 0).repeat_interleave(bkv, 1)[:q_len, :kv_len].bool()
            cell = exact & pb
            if full is not None:
                fb = full[b, h].repeat_interleave(bq, 0).repeat_interleave(bkv, 1)[:q_len, :kv_len].bool()
                cell = cell | fb
            out[b, h] = cell
    return out
