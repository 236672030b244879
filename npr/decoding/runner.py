"""Model runner: one forward of any HF causal LM over a flat batch of query tokens (prefills, forced
runs and decodes of many sequences mixed), reading and writing a growing K/V pool indexed by the
protocol's slot ids. Each step attends only over the slots its sequences can see (their union), so
memory and time follow the tokens actually produced, not the budget."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch

from npr.attention import register_attention
from npr.forkjoin import Work
from npr.scoring import upcast


class KVPool:
    """K and V per layer, [1, num_kv_heads, capacity, head_dim], grown (doubling) to cover the slot ids
    in use. Which slot belongs to whom is the protocol's business (npr.forkjoin.SlotManager)."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, capacity: int = 256):
        shape = (1, num_kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def ensure(self, num_slots: int) -> None:
        if num_slots <= self.capacity:
            return
        new = self.capacity
        while new < num_slots:
            new *= 2
        grow = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], new - t.shape[2], t.shape[3])], 2)  # noqa: E731
        self.k = [grow(t) for t in self.k]
        self.v = [grow(t) for t in self.v]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class StepCache:
    """A transformers-style cache: `update` writes the step's K/V into their slots and returns the K/V
    of the step's visible slots only (`columns`); the mask rows say what each query reads of them."""

    is_compileable = False

    def __init__(self, pool: KVPool, slots: torch.Tensor, columns: torch.Tensor):
        self.pool, self.slots, self.columns = pool, slots, columns

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        k, v = self.pool.k[layer_idx], self.pool.v[layer_idx]
        k.index_copy_(2, self.slots, key_states.to(k.dtype))
        v.index_copy_(2, self.slots, value_states.to(v.dtype))
        return k.index_select(2, self.columns), v.index_select(2, self.columns)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


@dataclass
class StepInputs:
    """One step's forward inputs (host tensors). N query tokens; C visible slots (`columns`);
    mask [N, C]: query i may read column c; keep: the query rows whose logits are returned."""

    input_ids: torch.Tensor  # [N]
    positions: torch.Tensor  # [N]
    slots: torch.Tensor  # [N] slot each token's K/V is written to
    columns: torch.Tensor  # [C] slot of each attended column
    mask: torch.Tensor  # [N, C] bool
    keep: torch.Tensor  # [K]
    rows: list[list[int]]  # per work: its query rows in the flat batch


def _model_shape(model) -> tuple[int, int, int]:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    num_kv = getattr(config, "num_key_value_heads", None) or num_heads
    return config.num_hidden_layers, num_kv, head_dim


class ModelRunner:
    """Owns the K/V pool of a Decoder (kept across generate() calls); prepares and runs steps."""

    def __init__(self, model):
        register_attention()
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        num_layers, num_kv, head_dim = _model_shape(model)
        self.pool = KVPool(num_layers, num_kv, head_dim, self.dtype, self.device)

    @staticmethod
    def prepare(works: Sequence[Work], keep_rows: Sequence[int]) -> StepInputs:
        """Flatten the works of one step: token j of a work sees its context and its own tokens 0..j."""
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        column_of: dict[int, int] = {}
        q_index: list[int] = []
        c_index: list[int] = []
        rows: list[list[int]] = []
        for work in works:
            base = len(ids)
            ids += work.tokens
            positions += work.positions
            slots += work.slots
            for slot in work.context:
                column_of.setdefault(slot, len(column_of))
            context_cols = [column_of[s] for s in work.context]
            own_cols = [column_of.setdefault(s, len(column_of)) for s in work.slots]
            for j in range(len(work.tokens)):
                q_index += [base + j] * (len(context_cols) + j + 1)
                c_index += context_cols
                c_index += own_cols[:j + 1]
            rows.append(list(range(base, len(ids))))
        mask = torch.zeros(len(ids), len(column_of), dtype=torch.bool)
        mask[torch.tensor(q_index), torch.tensor(c_index)] = True
        as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        return StepInputs(as_long(ids), as_long(positions), as_long(slots), as_long(list(column_of)), mask,
                          as_long(list(keep_rows)), rows)

    @contextmanager
    def _npr_attention(self):
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = "npr"
        try:
            yield
        finally:
            config._attn_implementation = previous

    @torch.inference_mode()
    def run(self, step: StepInputs, high_water: int) -> torch.Tensor:
        """Write the step's K/V, attend over its visible slots; returns logits [K, V] of the kept rows."""
        self.pool.ensure(high_water)
        device = self.device
        ids, positions, slots, columns, keep = (t.to(device) for t in (step.input_ids, step.positions, step.slots,
                                                                          step.columns, step.keep))
        mask = step.mask.to(device)
        with self._npr_attention():
            out = self.model(input_ids=ids[None], position_ids=positions[None], attention_mask=mask[None, None],
                             past_key_values=StepCache(self.pool, slots, columns), use_cache=True,
                             logits_to_keep=keep)
        return upcast(out.logits[0])
