"""The one KV-slot manager of the protocol: slot ids with exactly one owner each (pure Python).

Engines keep the K/V tensors (or their own allocator) indexed by these ids; every fork, join, finish
and abort moves slots through here, so ownership is checked in one place. Slots are handed out
lowest-first, so the highest id in use follows the live tokens and a growing KV tensor stays small."""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Sequence

from npr.errors import PoolExhaustedError


class SlotManager:
    """`capacity` slots (None = unbounded: the engine grows its tensors to `high_water`)."""

    def __init__(self, capacity: int | None = None):
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be an int >= 1 or None, got {capacity!r}")
        self.capacity = capacity
        self._freed: list[int] = []  # a heap of released ids below _fresh
        self._fresh = 0  # ids >= _fresh were never handed out
        self._owner: dict[int, Any] = {}

    @property
    def num_used(self) -> int:
        return len(self._owner)

    @property
    def num_free(self) -> int | None:
        return None if self.capacity is None else self.capacity - len(self._owner)

    @property
    def high_water(self) -> int:
        """One past the highest id ever handed out: the size a KV tensor must have."""
        return self._fresh

    def can_alloc(self, count: int, forks: Sequence[int] = ()) -> bool:
        """Room for `count` new slots (and for forks of these branch counts: free here, rows elsewhere)."""
        return self.capacity is None or count <= self.capacity - len(self._owner)

    def alloc(self, count: int, owner: Any) -> list[int]:
        if not self.can_alloc(count):
            raise PoolExhaustedError(f"KV pool exhausted: {count} slots wanted, {self.num_free} free of "
                                     f"{self.capacity}; raise the engine's KV slot limit or decode fewer requests")
        out = []
        for _ in range(count):
            if self._freed:
                slot = heapq.heappop(self._freed)
            else:
                slot, self._fresh = self._fresh, self._fresh + 1
            self._owner[slot] = owner
            out.append(slot)
        return out

    def owner_of(self, slot: int) -> Any:
        return self._owner.get(slot)

    def transfer(self, slots: Iterable[int], old: Any, new: Any) -> None:
        for slot in slots:
            if self._owner.get(slot) is not old:
                raise RuntimeError(f"slot {slot} moved from {old!r} but owned by {self._owner.get(slot)!r}")
            self._owner[slot] = new

    def free(self, slots: Iterable[int], owner: Any) -> None:
        for slot in slots:
            if self._owner.get(slot) is not owner:
                raise RuntimeError(f"slot {slot} freed by {owner!r} but owned by {self._owner.get(slot)!r}")
            del self._owner[slot]
            heapq.heappush(self._freed, slot)


class SlotCounter:
    """Slot accounting for an engine that keeps the slot ids on its device (SGLang: every decode row
    gets its slot from SGLang's allocator and the req_to_token rows are the slot lists). `alloc` hands
    out anonymous slots (None), so the controller's lists only count; `room(count, forks)` is the
    engine's own answer to "can this step allocate `count` slots and rows for forks of these widths"."""

    capacity = None
    high_water = 0

    def __init__(self, room: Callable[[int, Sequence[int]], bool]):
        self._room = room
        self.num_used = 0

    def can_alloc(self, count: int, forks: Sequence[int] = ()) -> bool:
        return self._room(count, forks)

    def alloc(self, count: int, owner: Any) -> list[None]:
        self.num_used += count
        return [None] * count

    def transfer(self, slots: Iterable[Any], old: Any, new: Any) -> None:
        pass

    def free(self, slots: Sequence[Any], owner: Any) -> None:
        if len(slots) > self.num_used:
            raise RuntimeError(f"{len(slots)} slots freed by {owner!r} but only {self.num_used} are counted as used")
        self.num_used -= len(slots)
