"""meta_info["npr"] is the request's fork-join record itself (a dict), not a list of per-chunk values."""

from __future__ import annotations

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._accumulate_request_meta_info"


def npr_record(original, meta_info, state, key, values, *args, **kwargs):
    from npr.wire import NPR_KEY

    if key == NPR_KEY:
        if values:
            meta_info[key] = values[-1]
        return None
    return original(meta_info, state, key, values, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, npr_record, HookType.AROUND)
