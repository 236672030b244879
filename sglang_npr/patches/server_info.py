"""The scheduler's init info (which SGLang merges into Engine.get_server_info() and HTTP /server_info)
gains an "npr" entry. It is written by the scheduler process itself, so its presence proves the plugin
is loaded where requests run; client helpers refuse NPR requests to a server without it."""

from __future__ import annotations

from typing import Any

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_init_info"
KEY = "npr"


def describe(scheduler) -> dict[str, Any]:
    from sglang_npr.backend import is_npr_backend
    from sglang_npr.capabilities import capabilities, server_refusal

    runner = getattr(getattr(scheduler, "tp_worker", None), "model_runner", None)
    backend = getattr(runner, "attn_backend", None)
    is_npr = is_npr_backend(backend)
    return {**capabilities(), "attention_backend": "npr" if is_npr else getattr(scheduler.server_args, "attention_backend", None),
            "inner_attention_backend": backend.npr_inner_backend if is_npr else None,
            "fork_join_enabled": bool(is_npr and capabilities()["fork_join"]) and server_refusal(scheduler.server_args) is None,
            "refusal": server_refusal(scheduler.server_args)}


def add_npr_info(result: dict, self, *args, **kwargs) -> dict:
    result[KEY] = describe(self)
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, add_npr_info, HookType.AFTER)
