"""Before SGLang processes a batch's result: the NPR engine takes over the NPR requests whose prompts
ended in it (radix insert of the prompt, the controller admits them) and commits its step (forks,
joins, finishes, streaming). An NPR-only batch carries nothing else for SGLang to process."""

from __future__ import annotations

import logging

TARGET = "sglang.srt.managers.scheduler.Scheduler.process_batch_result"
logger = logging.getLogger(__name__)


def commit_npr_first(original, self, batch, result, *args, **kwargs):
    from sglang_npr.engine.counters import busy_field, timed

    with timed(busy_field(batch)):
        return _process(original, self, batch, result, *args, **kwargs)


def _process(original, self, batch, result, *args, **kwargs):
    from sglang_npr.engine.counters import timed
    from sglang_npr.engine.tail import is_npr_only

    engine = getattr(self, "_npr_engine", None)
    if engine is not None:
        try:
            with timed("npr_host_s"):
                engine.on_result(batch)
        except Exception as exc:  # noqa: BLE001 - report to the clients, keep the server alive
            logger.exception("NPR fork-join step failed")
            engine.release_all(f"NPR fork-join step failed: {type(exc).__name__}: {exc}")
    if is_npr_only(batch) or result is None:
        return None
    return original(self, batch, result, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, commit_npr_first, HookType.AROUND)
