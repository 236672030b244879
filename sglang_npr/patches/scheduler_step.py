"""Scheduler loop: each iteration, before SGLang picks its own next batch, the NPR engine runs one
fork-join step (one forward) for all NPR requests. A failing step aborts every NPR request with the
error and gives all their KV back; SGLang's own requests go on."""

from __future__ import annotations

import logging

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_next_batch_to_run"
logger = logging.getLogger(__name__)


def step_npr_first(original, self, *args, **kwargs):
    engine = getattr(self, "_npr_engine", None)
    if engine is not None and engine.has_work:
        try:
            engine.step()
        except Exception as exc:  # noqa: BLE001 - report to the clients, keep the server alive
            logger.exception("NPR fork-join step failed")
            engine.release_all(f"NPR fork-join step failed: {type(exc).__name__}: {exc}")
    return original(self, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, step_npr_first, HookType.AROUND)
