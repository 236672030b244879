"""The scheduler's internal state (Engine.get_server_info()["internal_states"], HTTP /server_info)
gains "npr": the counters of `sglang_npr.engine.counters` (forwards, rows, time per batch kind)."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_internal_state"


def add_counters(result, self, *args, **kwargs):
    from sglang_npr.engine.counters import snapshot

    state = getattr(result, "internal_state", None)
    if isinstance(state, dict):
        state["npr"] = snapshot()
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, add_counters, HookType.AFTER)
