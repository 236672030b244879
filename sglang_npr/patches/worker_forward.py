"""The TP worker's forward: the planned NPR rows are appended to the decode batch's rows for this one
forward and stripped right after, so everything SGLang does with the batch before and after (relay of
sampled tokens, result copies, filtering) sees only its own rows."""

from __future__ import annotations

TARGET = "sglang.srt.managers.tp_worker.TpModelWorker.forward_batch_generation"


def ride_decode_batch(original, self, batch=None, *args, **kwargs):
    from sglang_npr.engine import tail as tails
    from sglang_npr.engine.counters import COUNTERS, timed
    from sglang_npr.patches.scheduler_queue import active_engine

    if batch is None:
        return original(self, batch, *args, **kwargs)
    COUNTERS.forwards += 1
    engine = active_engine()
    step = engine.step if engine is not None else None
    decode = batch.forward_mode.is_decode()
    if not decode:
        COUNTERS.extend_forwards += 1
        COUNTERS.extend_tokens += int(batch.input_ids.shape[0]) if batch.input_ids is not None else 0
        with timed("extend_forward_s"):
            return original(self, batch, *args, **kwargs)
    COUNTERS.decode_forwards += 1
    if step is None or step.forward_iter is not None:
        COUNTERS.decode_rows += int(batch.input_ids.shape[0])
        with timed("decode_forward_s"):
            return original(self, batch, *args, **kwargs)
    tails.attach(batch, step)
    COUNTERS.decode_rows += int(batch.input_ids.shape[0])
    COUNTERS.npr_rows += step.num_rows
    COUNTERS.npr_forwards += 1
    try:
        with timed("decode_forward_s"):
            result = original(self, batch, *args, **kwargs)
    finally:
        tails.strip(batch)
    COUNTERS.npr_graph_forwards += bool(getattr(result, "can_run_cuda_graph", False))
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, ride_decode_batch, HookType.AROUND)
