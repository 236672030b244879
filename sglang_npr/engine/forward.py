"""One forward of the model in SGLang's model runner over per-token rows. Row i feeds one token at one
position and attends to exactly the KV slots listed for it (its own new slot last): the controller's
`Work.context + Work.slots[:j+1]`. It runs as a DECODE batch whose req_to_token rows are written for
this forward and freed after it; every layer writes the batch's K/V before attending, so a row sees the
slots written by earlier rows of the same forward. Returns the raw logits [rows, V]."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Row:
    slots: Sequence[int]  # what this token attends to, in order; its own (new) slot last
    token: int
    position: int


class RowRunner:
    """Runs rows through the scheduler's model runner (scheduler process, non-overlap loop)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.model_runner = scheduler.tp_worker.model_runner
        self.pool = scheduler.req_to_token_pool
        self._reqs: list = []  # placeholder Req objects, one per row of a forward (reused)

    def run(self, rows: Sequence[Row]):
        """Raw logits [len(rows), V] (float, on the model's device), in row order."""
        import torch

        out = []
        start = 0
        while start < len(rows):
            room = self.pool.available_size()
            if room < 1:
                raise RuntimeError("no free req_to_token row for an NPR forward; lower max_running_requests load")
            chunk = rows[start:start + room]
            out.append(self._run_chunk(chunk))
            start += len(chunk)
        return out[0] if len(out) == 1 else torch.cat(out)

    def _placeholders(self, count: int) -> list:
        from sglang.srt.managers.schedule_batch import Req
        from sglang.srt.sampling.sampling_params import SamplingParams

        while len(self._reqs) < count:
            params = SamplingParams(max_new_tokens=1, temperature=0.0)
            req = Req(f"npr-row-{len(self._reqs)}", "", array("q", [0]), params,
                      vocab_size=self.scheduler.model_config.vocab_size)
            self._reqs.append(req)
        return self._reqs[:count]

    def _run_chunk(self, rows: Sequence[Row]):
        import torch
        from sglang.srt.managers.schedule_batch import ScheduleBatch
        from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
        from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo

        scheduler, pool = self.scheduler, self.pool
        indices = pool.alloc_rows(len(rows))
        reqs = self._placeholders(len(rows))
        try:
            device = pool.req_to_token.device
            for index, row in zip(indices, rows):
                pool.req_to_token[index, :len(row.slots)] = torch.tensor(list(row.slots), dtype=pool.req_to_token.dtype,
                                                                         device=device)
            for req, index in zip(reqs, indices):
                req.kv.req_pool_idx = index
            batch = ScheduleBatch.init_new(reqs=reqs, req_to_token_pool=pool,
                                           token_to_kv_pool_allocator=scheduler.token_to_kv_pool_allocator,
                                           tree_cache=scheduler.tree_cache, model_config=scheduler.model_config,
                                           enable_overlap=False, spec_algorithm=scheduler.spec_algorithm)
            lens = [len(row.slots) for row in rows]
            batch.forward_mode = ForwardMode.DECODE
            batch.input_ids = torch.tensor([row.token for row in rows], dtype=torch.int64, device=device)
            batch.req_pool_indices = torch.tensor(indices, dtype=torch.int64, device=device)
            batch.req_pool_indices_cpu = torch.tensor(indices, dtype=torch.int64)
            batch.seq_lens = torch.tensor(lens, dtype=torch.int64, device=device)
            batch.seq_lens_cpu = torch.tensor(lens, dtype=torch.int64)
            batch.orig_seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
            batch.seq_lens_sum = sum(lens)
            batch.out_cache_loc = torch.tensor([row.slots[-1] for row in rows], dtype=torch.int64, device=device)
            batch.sampling_info = SamplingBatchInfo.from_schedule_batch(batch, scheduler.model_config.vocab_size)
            forward_batch = ForwardBatch.init_new(batch, self.model_runner, return_hidden_states_before_norm=False)
            forward_batch.positions = torch.tensor([row.position for row in rows], dtype=forward_batch.positions.dtype,
                                                   device=forward_batch.positions.device)
            output = self.model_runner.forward(forward_batch)
            return output.logits_output.next_token_logits[:len(rows)]
        finally:
            for req in reqs:
                req.kv.req_pool_idx = None
            pool.free_rows(list(indices))
