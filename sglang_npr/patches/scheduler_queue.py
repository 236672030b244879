"""Scheduler intake: a request carrying custom_params["npr"] (validated at the tokenizer) is taken by the
NPR engine instead of SGLang's waiting queue, so its KV never enters the radix cache and SGLang's own
batches, retraction and finish paths never touch it."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler.Scheduler._add_request_to_queue"


def engine_of(scheduler):
    """The scheduler's NPR engine, created on first use."""
    engine = getattr(scheduler, "_npr_engine", None)
    if engine is None:
        from sglang_npr.engine.npr_engine import NprEngine

        engine = scheduler._npr_engine = NprEngine(scheduler)
    return engine


def divert_npr(original, self, req, *args, **kwargs):
    from sglang_npr.protocol import parse_npr_params

    params = parse_npr_params(getattr(req.sampling_params, "custom_params", None))
    if params is None:
        return original(self, req, *args, **kwargs)
    try:
        engine_of(self).add(req, params)
    except (ValueError, TypeError) as exc:
        from sglang.srt.disaggregation.utils import prepare_abort

        prepare_abort(req, f"NPR request refused: {exc}")
        self.output_streamer.stream_output([req], req.return_logprob)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, divert_npr, HookType.AROUND)
