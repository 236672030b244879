"""Scheduler intake: a request carrying custom_params["npr"] (validated at the tokenizer) is given to
the NPR engine (its limits, its token choice) and then goes into SGLang's waiting queue like any other,
so its prompt prefills in SGLang's own extend with the radix cache. A request the engine refuses gets
a clear abort instead."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler._add_request_to_queue"

_ENGINE = None  # the NPR engine of this scheduler process (one scheduler per process)


def engine_of(scheduler):
    """The scheduler's NPR engine, created on first use."""
    global _ENGINE
    engine = getattr(scheduler, "_npr_engine", None)
    if engine is None:
        from sglang_npr.engine.npr_engine import NprEngine

        engine = scheduler._npr_engine = _ENGINE = NprEngine(scheduler)
    return engine


def active_engine():
    """This process's NPR engine, or None before the first NPR request (read by the worker-side hooks)."""
    return _ENGINE


def take_npr(original, self, req, *args, **kwargs):
    from npr.wire import parse_npr_params

    if getattr(req, "npr_params", None) is None and not kwargs.get("is_retracted", False):
        params = parse_npr_params(getattr(req.sampling_params, "custom_params", None))
        if params is not None:
            try:
                engine_of(self).intake(req, params)
            except (ValueError, TypeError) as exc:
                from sglang.srt.disaggregation.utils import prepare_abort

                prepare_abort(req, f"NPR request refused: {exc}")
                self.output_streamer.stream_output([req], req.return_logprob)
                return None
    return original(self, req, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, take_npr, HookType.AROUND)
