"""The overlap scheduler stays on; a decode batch that carries an NPR step runs after the previous
batch's result is processed (SGLang's own per-batch switch, `is_disable_overlap_for_batch`), because
the step's plan reads the previous step's tokens. Batches without NPR rows overlap as before."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler.is_disable_overlap_for_batch"


def sync_npr_steps(result, self, batch, *args, **kwargs):
    if result or batch is None or not getattr(self, "result_queue", None):
        return result  # nothing in flight to wait for
    engine = getattr(self, "_npr_engine", None)
    if engine is None or not engine.has_decode_work:
        return result
    from sglang_npr.engine.tail import is_npr_only

    return bool(is_npr_only(batch) or batch.forward_mode.is_decode())


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, sync_npr_steps, HookType.AFTER)
