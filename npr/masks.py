"""The one visibility rule (DESIGN §4), written once as a mask_mod predicate and rendered two ways:
a dense boolean mask (SDPA / eager, CPU, short sequences) and a flex-attention BlockMask, plus the
model kwargs (`attention_kwargs`) from which the attention "npr" renders either one itself.

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
    if block_id.dim() == 1:
        return dense_mask_from_ids(block_id[None], branch_id[None], None if seq_id is None else seq_id[None])[0]
    return dense_mask_from_ids(block_id, branch_id, seq_id)


def dense_mask_from_ids(block_id: torch.Tensor, branch_id: torch.Tensor, seq_id: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """BoolTensor [R, L, L] of the rule for per-token ids [R, L] (rows; seq_id -1 marks padding)."""
    mod = make_npr_mask_mod(block_id, branch_id, seq_id)
    rows, length = block_id.shape
    ar = lambda n: torch.arange(n, device=block_id.device)  # noqa: E731
    return mod(ar(rows)[:, None, None], None, ar(length)[None, :, None], ar(length)[None, None, :])


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


# ---------------------------------------------------------------------------------------------
# Model kwargs: the structure travels as per-token ids, and the attention renders the mask itself

BLOCK_KEY, BRANCH_KEY, LENGTHS_KEY = "npr_block_id", "npr_branch_id", "npr_seq_lens"
STRUCTURE_KEYS = (BLOCK_KEY, BRANCH_KEY, LENGTHS_KEY)


def attention_kwargs(layouts: Any) -> dict[str, torch.Tensor]:
    """Model kwargs for ONE packed row of `layouts` (a Layout or a sequence of them), read by the attention
    "npr": position_ids LongTensor [1, L] (the layouts' positions), npr_block_id / npr_branch_id
    LongTensor [L] and npr_seq_lens LongTensor [N]. No attention_mask: the attention builds it.

    The STRUCTURE_KEYS entries of per-sequence calls, concatenated on dim 0, equal those of one call
    over all sequences (verl concatenates per-sample `multi_modal_inputs` that way), and then serve both
    a packed row ([1, sum L]) and a padded batch ([N, max L], one sequence per row, right padding).
    Raises TypeError for anything that is not a layout, ValueError for an empty list."""
    if hasattr(layouts, "block_id") and hasattr(layouts, "position_ids"):
        layouts = [layouts]
    layouts = list(layouts)
    if not layouts:
        raise ValueError("attention_kwargs needs at least one Layout, got an empty list")
    for layout in layouts:
        block = getattr(layout, "block_id", None)
        if not isinstance(block, torch.Tensor) or block.dim() != 1:
            raise TypeError(f"attention_kwargs takes npr.layout.Layout objects, got {type(layout).__name__}")
    cat = lambda name: torch.cat([getattr(x, name).to(torch.long) for x in layouts])  # noqa: E731
    return {"position_ids": cat("position_ids")[None], BLOCK_KEY: cat("block_id"), BRANCH_KEY: cat("branch_id"),
            LENGTHS_KEY: torch.tensor([len(x.block_id) for x in layouts], dtype=torch.long)}


def ids_from_kwargs(block_id: torch.Tensor, branch_id: torch.Tensor, seq_lens: torch.Tensor, num_rows: int,
                    length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ids [R, length] (block, branch, seq; seq -1 = padding) from flat attention kwargs.

    num_rows == 1: all sequences one after another in one packed row (trailing tokens = padding);
    num_rows == len(seq_lens): one sequence per row, right-padded. Raises ValueError otherwise."""
    seq_lens = seq_lens.reshape(-1).to(device=block_id.device, dtype=torch.long)
    block_id, branch_id = block_id.reshape(-1), branch_id.reshape(-1).to(block_id.device)
    total, num_seqs = int(seq_lens.sum()), seq_lens.numel()
    if block_id.numel() != total or branch_id.numel() != total:
        raise ValueError(f"{BLOCK_KEY}/{BRANCH_KEY} hold {block_id.numel()}/{branch_id.numel()} tokens but "
                         f"{LENGTHS_KEY} sums to {total}; build them with npr.masks.attention_kwargs")
    row_lens = seq_lens.sum()[None] if num_rows == 1 else seq_lens
    if num_rows not in (1, num_seqs) or int(row_lens.max()) > length:
        raise ValueError(f"attention kwargs for {num_seqs} sequences of lengths {seq_lens.tolist()} do not fit "
                         f"the model input of {num_rows} rows x {length} tokens (expected one packed row of at "
                         f"least {total} tokens, or {num_seqs} rows); sequence parallelism is not supported")
    seq_flat = torch.repeat_interleave(torch.arange(num_seqs, device=block_id.device), seq_lens)
    keep = torch.arange(length, device=block_id.device)[None, :] < row_lens[:, None]
    out = []
    for flat, fill in ((block_id, 0), (branch_id, 0), (seq_flat, -1)):
        grid = torch.full((num_rows, length), fill, dtype=torch.long, device=block_id.device)
        grid[keep] = flat.to(torch.long)
        out.append(grid)
    return out[0], out[1], out[2]


def block_mask_from_ids(block_id: torch.Tensor, branch_id: torch.Tensor, seq_id: torch.Tensor,
                        block_size: int = 128):
    """flex-attention BlockMask [R, 1, L, L] of the rule for per-token ids [R, L], built tile by tile from
    per-tile id ranges: never materialises an [L, L] mask. A tile not provably all-visible or
    all-hidden is partial and gets the exact mask_mod, so the classification only has to be sound."""
    from torch.nn.attention.flex_attention import BlockMask

    rows, length = block_id.shape
    num_tiles = -(-length // block_size)
    pad = num_tiles * block_size - length

    def ranges(ids):  # per-tile min and max, [R, n] each; repeating the last token keeps them exact
        ids = torch.cat([ids, ids[:, -1:].expand(rows, pad)], dim=1).view(rows, num_tiles, block_size)
        return ids.amin(-1), ids.amax(-1)

    (blk_lo, blk_hi), (br_lo, br_hi), (sq_lo, sq_hi) = ranges(block_id), ranges(branch_id), ranges(seq_id)
    q, k = (lambda t: t[:, :, None]), (lambda t: t[:, None, :])  # as [R, nQ, 1] / [R, 1, nKV]
    tile = torch.arange(num_tiles, device=block_id.device)[None]
    one_seq = (sq_lo == sq_hi) & (sq_lo >= 0)
    one_branch = (blk_lo == blk_hi) & (br_lo == br_hi) & (br_lo > 0) & one_seq
    same_block = q(one_branch) & k(one_branch) & (q(blk_lo) == k(blk_lo)) & (q(sq_lo) == k(sq_lo))
    empty = ((k(tile) > q(tile)) | (k(sq_hi) < q(sq_lo)) | (k(sq_lo) > q(sq_hi))
             | (same_block & (q(br_lo) != k(br_lo))))
    no_siblings = ((q(br_hi) == 0) | (k(br_hi) == 0) | (k(blk_hi) < q(blk_lo)) | (k(blk_lo) > q(blk_hi))
                   | (same_block & (q(br_lo) == k(br_lo))))
    full = (k(tile) < q(tile)) & q(one_seq) & k(one_seq) & (q(sq_lo) == k(sq_lo)) & no_siblings & ~empty
    partial = ~empty & ~full

    def as_blocks(selected):  # counts [R, 1, nQ] and indices [R, 1, nQ, nKV], selected tiles first
        order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True)
        return selected.sum(-1, dtype=torch.int32)[:, None], order.to(torch.int32)[:, None]

    mod = make_npr_mask_mod(block_id, branch_id, seq_id)
    return BlockMask.from_kv_blocks(*as_blocks(partial), *as_blocks(full), BLOCK_SIZE=block_size, mask_mod=mod,
                                    seq_lengths=(length, length))
