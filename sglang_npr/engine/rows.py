"""`RowTable`: the KV of NPR sequences as SGLang req_to_token rows (scheduler process, page size 1).

A request's trunk uses its own Req's row; its prompt [0, P) is SGLang's (prefilled, in the radix tree
and locked), everything after P is NPR's. Branch 1 decodes on in the trunk's row; branch i > 1 gets a
bare row whose [0, L) aliases the trunk's prefix with one indexed device copy (SGLang's beam-search
fork, `beam_search/fork.py`). A join copies branch i's own entries after branch i-1's in the trunk
row and frees the branch rows: the slots change owner, no K/V moves. Each row carries a position
offset (`delta`): a token's position is its index in the row plus the delta, which only a join
changes (by max L_i - sum L_i, DESIGN §4). Lengths and deltas live on the host; slot ids never do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class SeqRow:
    """Where one controller sequence lives: its row and the index its own KV starts at."""

    row: int
    start: int


class RowTable:
    def __init__(self, req_to_token_pool, token_to_kv_pool_allocator, tree_cache):
        self.pool = req_to_token_pool
        self.allocator = token_to_kv_pool_allocator
        self.tree_cache = tree_cache
        self.length: dict[int, int] = {}  # row -> KV entries written
        self.delta: dict[int, int] = {}  # row -> position offset

    @property
    def device(self):
        return self.pool.req_to_token.device

    # -- capacity --------------------------------------------------------------------------------
    def room(self, num_slots: int, forks=()) -> bool:
        """Whether `num_slots` new KV slots (the radix cache evicted first) and the bare rows of forks
        of these widths can be had now."""
        from sglang.srt.mem_cache.common import evict_from_tree_cache

        if self.allocator.available_size() < num_slots:
            evict_from_tree_cache(self.tree_cache, num_slots)
        rows = sum(max(0, n - 1) for n in forks)
        return self.allocator.available_size() >= num_slots and self.pool.available_size() >= rows

    # -- lifecycle -------------------------------------------------------------------------------
    def adopt(self, row: int, prompt_len: int) -> SeqRow:
        """A prefilled request's trunk: its row holds the prompt's KV."""
        self.length[row], self.delta[row] = prompt_len, 0
        return SeqRow(row, prompt_len)

    def fork(self, trunk: SeqRow, num_branches: int) -> list[SeqRow]:
        import torch

        length, delta = self.length[trunk.row], self.delta[trunk.row]
        children = [SeqRow(trunk.row, length)]
        if num_branches > 1:
            rows = self.pool.alloc_rows(num_branches - 1)
            if rows is None:  # the controller checked room(); reaching here is a bug
                raise RuntimeError(f"no free req_to_token row for a fork of {num_branches} branches")
            table = self.pool.req_to_token
            table[torch.tensor(rows, dtype=torch.int64, device=self.device), :length] = table[trunk.row, :length]
            for row in rows:
                self.length[row], self.delta[row] = length, delta
                children.append(SeqRow(row, length))
        return children

    def join(self, trunk: SeqRow, children: list[SeqRow], lengths: list[int]) -> None:
        """Append branches 2..n's own entries to the trunk row (branch 1 is there already); `lengths`:
        each branch's token count (the controller's), checked against the rows."""
        table = self.pool.req_to_token
        end = children[0].start + lengths[0]
        if self.length[trunk.row] != end:
            raise RuntimeError(f"join: trunk row has {self.length[trunk.row]} entries, the controller expects {end}")
        for child, count in zip(children[1:], lengths[1:]):
            if self.length[child.row] != child.start + count:
                raise RuntimeError(f"join: branch row has {self.length[child.row] - child.start} own entries, "
                                   f"the controller expects {count}")
            table[trunk.row, end:end + count] = table[child.row, child.start:child.start + count]
            end += count
            self._drop_row(child.row)
        self.pool.free_rows([c.row for c in children[1:]])
        self.length[trunk.row] = end
        self.delta[trunk.row] += max(lengths) - sum(lengths)

    def release(self, trunk: SeqRow, branches: list[SeqRow]) -> None:
        """Free every NPR-owned slot of a request (the trunk row after its prompt, open branch rows) and
        its bare rows; the trunk row keeps the prompt (SGLang releases the rest with the Req)."""
        table = self.pool.req_to_token
        pieces = []
        if self.length[trunk.row] > trunk.start:
            pieces.append(table[trunk.row, trunk.start:self.length[trunk.row]])
        bare = [b.row for b in branches if b.row != trunk.row]
        for row in bare:
            start = next(b.start for b in branches if b.row == row)
            if self.length[row] > start:
                pieces.append(table[row, start:self.length[row]])
            self._drop_row(row)
        if pieces:
            import torch

            self.allocator.free(torch.cat(pieces).to(torch.int64))
        if bare:
            self.pool.free_rows(bare)
        self.length[trunk.row], self.delta[trunk.row] = trunk.start, 0

    def forget(self, trunk: SeqRow) -> None:
        """The trunk row goes back to SGLang with its Req."""
        self._drop_row(trunk.row)

    def _drop_row(self, row: int) -> None:
        self.length.pop(row, None)
        self.delta.pop(row, None)

    # -- one decode step -------------------------------------------------------------------------
    def grow(self, rows: list[int]):
        """One new slot at the end of each row (SGLang's allocator; written into req_to_token on the
        device). Returns (out_cache_loc [R] int64, seq_lens [R] host list, deltas [R] host list)."""
        import torch

        from sglang.srt.mem_cache.allocation import alloc_token_slots

        locs = []
        for row in rows:
            locs.append(self.length[row])
            self.length[row] += 1
        slots = alloc_token_slots(self.tree_cache, len(rows))
        index = torch.tensor([rows, locs], dtype=torch.int64).to(self.device, non_blocking=True)
        self.pool.req_to_token[index[0], index[1]] = slots.to(self.pool.req_to_token.dtype)
        return slots.to(torch.int64), [loc + 1 for loc in locs], [self.delta[row] for row in rows]
