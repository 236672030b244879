"""Aborts (client request, client disconnect, abort_all) reach NPR requests too: the controller feeds
what is pending, then finishes them with "abort" and every slot goes back."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler.abort_request"


def abort_npr_too(original, self, recv_req, *args, **kwargs):
    engine = getattr(self, "_npr_engine", None)
    if engine is not None and engine.has_work:
        engine.abort(getattr(recv_req, "rid", None), abort_all=bool(getattr(recv_req, "abort_all", False)))
    return original(self, recv_req, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, abort_npr_too, HookType.AROUND)
