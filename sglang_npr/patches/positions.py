"""Positions of NPR rows: SGLang gives a decode row the position seq_len - 1 (its index in its
req_to_token row); an NPR row adds its row's offset (DESIGN §4: siblings share start positions, the
token after a join sits after the longest branch). Set on ForwardBatch.positions, which decode graph
replay copies, so it is CUDA-graph safe."""

from __future__ import annotations

TARGET = "sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new"


def add_npr_offsets(result, cls, batch, *args, **kwargs):  # a classmethod: SGLang passes cls
    tail = getattr(batch, "npr_tail", None)
    if tail is not None and result.positions is not None:
        base = result.positions.shape[0] - tail.num_rows
        positions = result.positions.clone()
        positions[base:] += tail.deltas.to(positions.dtype)
        result.positions = positions
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, add_npr_offsets, HookType.AFTER)
