"""Independent oracles for the tests: the engine semantics written with HF's KV cache (DESIGN §5: a
branch decodes on a copy of the prefix cache, the join concatenates prefix + branches without
recomputation) and a brute-force visibility rule from branch spans."""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache

from npr.layout import Layout


def brute_force_mask(layout: Layout) -> torch.Tensor:
    """[L, L] visibility from the rule in words, with Python loops (no shared code with npr.masks)."""
    n = len(layout)
    blk, br = layout.block_id.tolist(), layout.branch_id.tolist()
    out = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(q + 1):
            siblings = blk[q] == blk[k] and br[q] and br[k] and br[q] != br[k]
            out[q, k] = not siblings
    return out


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for layer, (k, v) in enumerate(kv):
        cache.update(k, v, layer)
    return cache


def _kv_of(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


@torch.no_grad()
def kv_cache_forward(model, layout: Layout) -> torch.Tensor:
    """Logits [L, V] computed the way the fork-join engine does: shared tokens extend one cache;
    at a branch region each branch decodes on a copy of the prefix cache; at the join the cache is
    prefix + branch 1 + ... + branch n (no recomputation); positions from the layout."""
    ids, pos = layout.token_ids, layout.position_ids
    blk, br = layout.block_id.tolist(), layout.branch_id.tolist()
    n = len(layout)
    logits = [None] * n
    cache = DynamicCache()

    def run(cache, idx):
        out = model(ids[idx][None], position_ids=pos[idx][None], past_key_values=cache, use_cache=True)
        for j, i in enumerate(idx):
            logits[i] = out.logits[0, j]

    i = 0
    while i < n:
        if not br[i]:
            j = i
            while j < n and not br[j]:
                j += 1
            run(cache, list(range(i, j)))
            i = j
            continue
        block = blk[i]
        j = i
        while j < n and br[j] and blk[j] == block:
            j += 1
        prefix_len = cache.get_seq_length()
        own = []
        for b in sorted(set(br[i:j])):
            idx = [t for t in range(i, j) if br[t] == b]
            branch_cache = copy.deepcopy(cache)
            run(branch_cache, idx)
            own.append([(k[:, :, prefix_len:], v[:, :, prefix_len:]) for k, v in _kv_of(branch_cache)])
        joined = []
        for layer, (k, v) in enumerate(_kv_of(cache)):
            joined.append((torch.cat([k] + [o[layer][0] for o in own], dim=2),
                           torch.cat([v] + [o[layer][1] for o in own], dim=2)))
        cache = _cache_from(joined)
        i = j
    return torch.stack(logits)
