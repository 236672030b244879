"""Model runner: one forward of any HF causal LM over a flat batch of query tokens (prefills and
decodes of many sequences mixed), reading and writing the slot pool. Each query's mask row is its
sequence's visibility row, so forks, joins and branch isolation cost nothing here.

Pure-decode steps (one token per sequence) have static shapes and are replayed from CUDA graphs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from npr.attention import register_attention
from npr.decoding.kv_pool import KVPool, VisibilityTable


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 when the model runs in float64 (exactness checks)."""
    return logits if logits.dtype == torch.float64 else logits.float()


class PoolCache:
    """A transformers-style cache whose `update` writes the step's K/V into pool slots and returns the
    whole pool; the attention mask (visibility rows) decides what each query reads."""

    is_compileable = False

    def __init__(self, pool: KVPool, slots: torch.Tensor):
        self.pool = pool
        self.slots = slots

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        k, v = self.pool.k[layer_idx], self.pool.v[layer_idx]
        k.index_copy_(2, self.slots, key_states.to(k.dtype))
        v.index_copy_(2, self.slots, value_states.to(v.dtype))
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


@dataclass
class StepInputs:
    """A flat batch of N query tokens, as host (CPU) tensors. hide_q/hide_slot: (query, slot) pairs a
    query must not see (later tokens of its own multi-token entry, written in the same step)."""

    input_ids: torch.Tensor  # [N]
    positions: torch.Tensor  # [N]
    slots: torch.Tensor  # [N] slot each token's K/V is written to
    rows: torch.Tensor  # [N] visibility row of each token's sequence
    keep: torch.Tensor  # [K] query indices whose logits are returned
    hide_q: torch.Tensor | None = None
    hide_slot: torch.Tensor | None = None

    @property
    def is_decode(self) -> bool:
        return self.hide_q is None and self.keep.numel() == self.input_ids.numel()

    def to(self, device) -> "StepInputs":
        """All fields on `device` with one host-to-device copy."""
        parts = [self.input_ids, self.positions, self.slots, self.rows, self.keep]
        if self.hide_q is not None:
            parts += [self.hide_q, self.hide_slot]
        flat = torch.cat(parts).to(device)
        views = list(torch.split(flat, [p.numel() for p in parts])) + [None, None]
        return StepInputs(*views[:7])


def _model_layout(model) -> tuple[int, int, int]:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
    num_kv = getattr(config, "num_key_value_heads", None) or num_heads
    return config.num_hidden_layers, num_kv, head_dim


class ModelRunner:
    """Owns the KV pool and visibility table for one generate() call; runs forwards."""

    def __init__(self, model, num_slots: int, num_rows: int, use_cuda_graphs: bool = True):
        register_attention()
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        num_layers, num_kv, head_dim = _model_layout(model)
        self.pool = KVPool(num_layers, num_kv, head_dim, num_slots, self.dtype, self.device)
        self.table = VisibilityTable(num_rows, num_slots, self.pool.trash_slot, self.device)
        self.use_graphs = use_cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, _DecodeGraph] = {}

    @contextmanager
    def _npr_attention(self):
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = "npr"
        try:
            yield
        finally:
            config._attn_implementation = previous

    def _forward(self, ids, positions, slots, mask, keep):
        out = self.model(input_ids=ids[None], position_ids=positions[None], attention_mask=mask[None, None],
                         past_key_values=PoolCache(self.pool, slots), use_cache=True, logits_to_keep=keep)
        return out.logits[0]

    @torch.inference_mode()
    def run(self, step: StepInputs) -> torch.Tensor:
        """Write the step's K/V, attend under the visibility rows; returns logits [K, V] (float)."""
        if step.is_decode and self.use_graphs:
            return self._run_graph(step)
        step = step.to(self.device)
        table = self.table.rows
        table[step.rows, step.slots] = True
        mask = table[step.rows]
        if step.hide_q is not None:
            mask[step.hide_q, step.hide_slot] = False
        with self._npr_attention():
            return _upcast(self._forward(step.input_ids, step.positions, step.slots, mask, step.keep))

    # -- CUDA graphs for decode steps ----------------------------------------------------------
    def _run_graph(self, step: StepInputs) -> torch.Tensor:
        count = step.input_ids.numel()
        bucket = 1 << max(0, (count - 1).bit_length())
        graph = self._graphs.get(bucket)
        if graph is None:
            with self._npr_attention():
                graph = self._graphs[bucket] = _DecodeGraph(self, bucket)
        # a copy: the graph's output buffer is overwritten by the next replay, and sequences keep
        # their last logits across steps (a branch that finished first scores the join's token)
        return graph.replay(step)[:count].clone()


class _DecodeGraph:
    """A captured decode forward for `size` query tokens (padding: trash slot, padding row).

    Inputs live in one static [4, size] tensor (ids, positions, slots, rows) filled by one host copy
    per step; the visibility update, the mask gather and the forward all run inside the graph."""

    def __init__(self, runner: ModelRunner, size: int):
        self.runner, self.size = runner, size
        device = runner.device
        self.inputs = torch.zeros(4, size, dtype=torch.long, device=device)
        self.inputs[2].fill_(runner.pool.trash_slot)
        self.inputs[3].fill_(runner.table.pad_row)
        self.host = torch.empty(4, size, dtype=torch.long).pin_memory()
        self.keep = torch.arange(size, device=device)  # every tensor the graph reads must outlive it
        self.true = torch.ones((), dtype=torch.bool, device=device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up kernels and allocator outside the capture
                self._body()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._body()

    def _body(self):
        ids, positions, slots, rows = self.inputs
        table = self.runner.table.rows
        table.index_put_((rows, slots), self.true)
        mask = table.index_select(0, rows)
        return _upcast(self.runner._forward(ids, positions, slots, mask, self.keep))

    def replay(self, step: StepInputs) -> torch.Tensor:
        count = step.input_ids.numel()
        host = self.host
        host[0, :count], host[1, :count] = step.input_ids, step.positions
        host[2, :count], host[3, :count] = step.slots, step.rows
        host[:2, count:] = 0
        host[2, count:] = self.runner.pool.trash_slot
        host[3, count:] = self.runner.table.pad_row
        self.inputs.copy_(host)  # blocking: the pinned buffer is free again when it returns
        self.graph.replay()
        return self.logits
