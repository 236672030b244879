"""The scheduler is not idle while NPR requests run (their KV slots are held outside SGLang's queues;
SGLang's idle leak check would otherwise count them as leaked, and the loop would sleep)."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler.is_fully_idle"


def busy_with_npr(result, self, *args, **kwargs):
    engine = getattr(self, "_npr_engine", None)
    if result and engine is not None and engine.has_work:
        return False
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, busy_with_npr, HookType.AFTER)
