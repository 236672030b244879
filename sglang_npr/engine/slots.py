"""`SglangSlots`: the controller's slot manager backed by SGLang's KV allocator, so controller slot ids
ARE SGLang KV slot indices and one owner per slot is checked in one place (npr.forkjoin.SlotManager)."""

from __future__ import annotations

from typing import Any

from npr.errors import PoolExhaustedError
from npr.forkjoin import SlotManager


class SglangSlots(SlotManager):
    """Slots from SGLang's token_to_kv_pool_allocator (the radix cache is asked to evict first)."""

    def __init__(self, tree_cache):
        super().__init__(capacity=None)
        self._tree_cache = tree_cache
        self._allocator = tree_cache.token_to_kv_pool_allocator

    def _evict_for(self, count: int) -> None:
        from sglang.srt.mem_cache.common import evict_from_tree_cache

        if self._allocator.available_size() < count:
            evict_from_tree_cache(self._tree_cache, count)

    def can_alloc(self, count: int) -> bool:
        self._evict_for(count)
        return self._allocator.available_size() >= count

    def alloc(self, count: int, owner: Any) -> list[int]:
        if count == 0:
            return []
        self._evict_for(count)
        got = self._allocator.alloc(count)
        if got is None:
            raise PoolExhaustedError(f"SGLang's KV pool has {self._allocator.available_size()} free slots, "
                                     f"{count} wanted; lower the load or raise --max-total-tokens")
        out = [int(s) for s in got.tolist()]
        for slot in out:
            self._owner[slot] = owner
        return out

    def free(self, slots, owner: Any) -> None:
        import torch

        slots = list(slots)
        for slot in slots:
            if self._owner.get(slot) is not owner:
                raise RuntimeError(f"slot {slot} freed by {owner!r} but owned by {self._owner.get(slot)!r}")
            del self._owner[slot]
        if slots:
            self._allocator.free(torch.tensor(slots, dtype=torch.int64, device=self._allocator.device))
