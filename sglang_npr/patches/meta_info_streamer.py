"""meta_info["npr"] rides SGLang's customized_info channel as a request-level key (sent once, at finish)."""

from __future__ import annotations

TARGET = ("sglang.srt.managers.scheduler_components.output_streamer."
          "SchedulerOutputStreamer.is_request_level_customized_info_key")


def npr_is_request_level(result, self, key, *args, **kwargs):
    from npr.wire import NPR_KEY

    return True if key == NPR_KEY else result


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, npr_is_request_level, HookType.AFTER)
