"""CPU only: SGLang 0.5.23's RotaryEmbedding.__init__ takes its fallback-kernel branch on any platform it
does not know and imports vllm._custom_ops there, although forward never calls it. Around the call the
module's `_is_cpu` flag is made true, which selects the native path; accelerators are never touched."""

from __future__ import annotations

TARGET = "sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.__init__"
_ACCELERATOR_FLAGS = ("_is_cuda", "_is_hip", "_is_npu", "_is_xpu", "_is_musa", "_is_mps")


def init_as_cpu(original, *args, **kwargs):
    from sglang.srt.layers.rotary_embedding import base

    if base._is_cpu or any(getattr(base, flag, False) for flag in _ACCELERATOR_FLAGS):
        return original(*args, **kwargs)
    base._is_cpu = True
    try:
        return original(*args, **kwargs)
    finally:
        base._is_cpu = False


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, init_as_cpu, HookType.AROUND)
