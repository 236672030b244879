"""KV memory of the reference decoder: a pool of token slots (per layer K and V, one owner per slot)
and a visibility table (one boolean row of slots per live sequence). A fork copies a row (prefix
shared, nothing copied in KV); a join ORs the branch rows into the parent's; attention masks are rows."""

from __future__ import annotations

from typing import Any

import torch

from npr.schema import NprError


class PoolExhaustedError(NprError, RuntimeError):
    """No free KV slot or table row is left."""


class KVPool:
    """K and V of `num_slots` slots per layer, laid out [1, num_kv_heads, num_slots, head_dim].

    The last slot is the trash slot: padded queries write there and nobody owns it.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_slots: int,
                 dtype: torch.dtype, device: torch.device | str):
        if num_slots < 2:
            raise ValueError(f"a KV pool needs at least 2 slots, got {num_slots}")
        shape = (1, num_kv_heads, num_slots, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_slots = num_slots
        self.trash_slot = num_slots - 1
        self._free = list(range(num_slots - 2, -1, -1))  # a stack; low slots first
        self._owner: list[Any] = [None] * num_slots

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity(self) -> int:
        return self.num_slots - 1

    def alloc(self, count: int, owner: Any) -> list[int]:
        if count > len(self._free):
            raise PoolExhaustedError(f"KV pool exhausted: {count} slots wanted, {len(self._free)} free of "
                                     f"{self.capacity}; raise DecodingConfig.max_kv_slots or decode fewer requests")
        slots = [self._free.pop() for _ in range(count)]
        for slot in slots:
            self._owner[slot] = owner
        return slots

    def transfer(self, slots: list[int], old: Any, new: Any) -> None:
        for slot in slots:
            if self._owner[slot] is not old:
                raise RuntimeError(f"slot {slot} is not owned by {old!r}")
            self._owner[slot] = new

    def free(self, slots: list[int], owner: Any) -> None:
        for slot in slots:
            if self._owner[slot] is not owner:
                raise RuntimeError(f"slot {slot} freed by {owner!r} but owned by {self._owner[slot]!r}")
            self._owner[slot] = None
            self._free.append(slot)

    def owned_by(self, owner: Any) -> int:
        return sum(1 for o in self._owner if o is owner)


class VisibilityTable:
    """rows[r, s] = True when the sequence holding row r may attend to slot s. [num_rows, num_slots] bool.

    The last row is the padding row: it sees the trash slot only (keeps padded softmax rows finite).
    """

    def __init__(self, num_rows: int, num_slots: int, trash_slot: int, device: torch.device | str):
        self.rows = torch.zeros(num_rows, num_slots, dtype=torch.bool, device=device)
        self.pad_row = num_rows - 1
        self.rows[self.pad_row, trash_slot] = True
        self._free = list(range(num_rows - 2, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self) -> int:
        if not self._free:
            raise PoolExhaustedError(f"visibility table full ({self.rows.shape[0] - 1} rows)")
        return self._free.pop()

    def copy(self, src: int, dst: int) -> None:
        self.rows[dst] = self.rows[src]

    def merge(self, dst: int, srcs: list[int]) -> None:
        self.rows[dst] |= self.rows[srcs].any(0)

    def release(self, row: int) -> None:
        self.rows[row] = False
        self._free.append(row)
