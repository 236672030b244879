"""Scheduler loop: when SGLang has no batch of its own to run but NPR requests are decoding, the next
batch is an otherwise empty decode batch, which the NPR step rides through SGLang's own run_batch,
model runner and (on GPU) decode graph. One forward per iteration either way."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_next_batch_to_run"


def npr_batch_if_idle(original, self, *args, **kwargs):
    plan = original(self, *args, **kwargs)
    engine = getattr(self, "_npr_engine", None)
    if plan.batch_to_run is None and engine is not None and engine.has_decode_work:
        from sglang_npr.engine.tail import empty_decode_batch

        plan.batch_to_run = empty_decode_batch(self)
    return plan


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, npr_batch_if_idle, HookType.AROUND)
