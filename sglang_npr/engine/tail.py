"""NPR rows riding SGLang's decode batch: the rows one controller step feeds, appended after the
batch's own rows for exactly one forward (`attach` ... `strip`, inside the TP worker's forward), the
way SGLang's beam search appends its member rows (`beam_search/batch_tail.py`). Every attention
backend reads a row's KV through req_to_token[row, :seq_len], so an NPR row is an ordinary decode row;
only its position differs (index + the row's delta, added after ForwardBatch.init_new) and its logits
are split off before SGLang's sampler. With no decode batch of its own to ride, the step runs in an
otherwise empty decode batch (`empty_decode_batch`), through the same path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SAVED = ("req_pool_indices", "req_pool_indices_cpu", "seq_lens", "seq_lens_cpu", "orig_seq_lens", "out_cache_loc",
          "input_ids", "seq_lens_sum")


@dataclass(eq=False)
class Tail:
    """One NPR step's rows, as device tensors [R] (built by the engine from the controller's plan)."""

    plan: Any  # npr.forkjoin.Plan
    rows: Any  # req_to_token rows, int64
    seq_lens: Any  # int64 device
    seq_lens_cpu: Any  # int64 host
    out_cache_loc: Any  # int64 device (SGLang's allocator)
    input_ids: Any  # int64 device
    deltas: Any  # position offsets, device, positions' dtype applied at use
    sample_rows: list[int] = field(default_factory=list)
    sample_seqs: list = field(default_factory=list)
    choices: list = field(default_factory=list)
    score_rows: list[int] = field(default_factory=list)
    score_tokens: list[int] = field(default_factory=list)
    forward_iter: int | None = None
    pending: Any = None  # sampling.Pending once the forward ran
    saved: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.rows.shape[0])


def attach(batch, tail: Tail) -> None:
    import torch

    tail.saved = {name: getattr(batch, name) for name in _SAVED}
    tail.forward_iter = batch.forward_iter
    batch.req_pool_indices = torch.cat([batch.req_pool_indices, tail.rows])
    batch.req_pool_indices_cpu = torch.cat([batch.req_pool_indices_cpu, tail.rows.cpu()
                                            if tail.rows.device.type != "cpu" else tail.rows])
    batch.seq_lens = torch.cat([batch.seq_lens, tail.seq_lens.to(batch.seq_lens.dtype)])
    if batch.seq_lens_cpu is not None:
        batch.seq_lens_cpu = torch.cat([batch.seq_lens_cpu, tail.seq_lens_cpu.to(batch.seq_lens_cpu.dtype)])
    batch.orig_seq_lens = torch.cat([batch.orig_seq_lens, tail.seq_lens.to(batch.orig_seq_lens.dtype)])
    batch.out_cache_loc = torch.cat([batch.out_cache_loc, tail.out_cache_loc.to(batch.out_cache_loc.dtype)])
    batch.input_ids = torch.cat([batch.input_ids, tail.input_ids.to(batch.input_ids.dtype)])
    batch.seq_lens_sum = None
    batch.npr_tail = tail


def strip(batch) -> None:
    tail = getattr(batch, "npr_tail", None)
    if tail is None:
        return
    for name, value in tail.saved.items():
        setattr(batch, name, value)
    tail.saved = {}
    batch.npr_tail = None


def empty_decode_batch(scheduler):
    """A decode ScheduleBatch with no request of SGLang's: the carrier of an NPR-only step. Its empty
    tensors and sampling info (SGLang's, for zero rows) are built once per scheduler and shared: attach
    replaces the tensors (never writes into them), and each batch gets its own shallow copy of the info."""
    import copy

    import torch

    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo

    pool = scheduler.req_to_token_pool
    batch = ScheduleBatch.init_new([], pool, scheduler.token_to_kv_pool_allocator, scheduler.tree_cache,
                                   scheduler.model_config, scheduler.enable_overlap, scheduler.spec_algorithm)
    batch.forward_mode = ForwardMode.DECODE
    shared = getattr(scheduler, "_npr_empty_parts", None)
    if shared is None:
        device = pool.req_to_token.device
        empty = lambda dtype, where=device: torch.empty(0, dtype=dtype, device=where)  # noqa: E731
        tensors = {"req_pool_indices": empty(torch.int64), "req_pool_indices_cpu": empty(torch.int64, "cpu"),
                   "seq_lens": empty(torch.int64), "seq_lens_cpu": empty(torch.int64, "cpu"),
                   "orig_seq_lens": empty(torch.int32), "out_cache_loc": empty(torch.int64), "seq_lens_sum": 0}
        for name, value in tensors.items():
            setattr(batch, name, value)
        info = SamplingBatchInfo.from_schedule_batch(batch, scheduler.model_config.vocab_size)
        shared = scheduler._npr_empty_parts = (tensors, info)
    tensors, info = shared
    for name, value in tensors.items():
        setattr(batch, name, value)
    batch.sampling_info = copy.copy(info)
    batch.npr_only = True
    return batch


def is_npr_only(batch) -> bool:
    return bool(getattr(batch, "npr_only", False))
