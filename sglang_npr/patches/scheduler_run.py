"""Before a decode batch runs, the NPR engine plans its step (admission, budgets, the rows and their
new KV slots), after the previous step's commit. A failing step aborts every NPR request with the
error and gives all their KV back; SGLang's own requests go on. An NPR-only batch with nothing left
to feed does not run."""

from __future__ import annotations

import logging

TARGET = "sglang.srt.managers.scheduler.Scheduler.run_batch"
logger = logging.getLogger(__name__)


def plan_npr_step(original, self, batch, *args, **kwargs):
    from sglang_npr.engine.counters import COUNTERS, busy_field, timed

    with timed(busy_field(batch)):
        result = _run(original, self, batch, *args, **kwargs)
    if result is not None:
        COUNTERS.batches += 1
    return result


def _run(original, self, batch, *args, **kwargs):
    from sglang_npr.engine.counters import timed
    from sglang_npr.engine.tail import is_npr_only

    engine = getattr(self, "_npr_engine", None)
    npr_only = is_npr_only(batch)
    if engine is not None and (npr_only or batch.forward_mode.is_decode()):
        try:
            with timed("npr_host_s"):
                tail = engine.plan_step()
        except Exception as exc:  # noqa: BLE001 - report to the clients, keep the server alive
            logger.exception("NPR fork-join step failed")
            engine.release_all(f"NPR fork-join step failed: {type(exc).__name__}: {exc}")
            tail = None
        if tail is None and npr_only:
            return None
    try:
        result = original(self, batch, *args, **kwargs)
    except Exception:
        if engine is not None and engine.step is not None:
            engine.release_all("NPR fork-join step failed: the forward raised")
        raise
    if engine is not None and engine.step is not None and engine.step.forward_iter is None:
        # planned, but no forward carried the rows: this SGLang build runs decode differently
        engine.release_all("NPR fork-join step failed: the decode forward did not carry the NPR rows")
    return result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, plan_npr_step, HookType.AROUND)
