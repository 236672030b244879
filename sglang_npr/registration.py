"""The one place that registers NPR with SGLang. Idempotent; imports SGLang lazily and checks its version first.

What it registers (LEDGER.md lists each): the attention-backend choice and factory "npr"; hooks for the
scheduler's server info and the tokenizer's request intake; on a machine without CUDA, the two CPU
compatibility hooks. SGLang's load_plugins() applies the hooks right after every plugin has registered.
"""

from __future__ import annotations

from npr.once import Once
from npr.versions import check_host_version
from sglang_npr.hooks import NprPatchError, check_patches_applied, install_patch, installed_patches  # noqa: F401


def _patch_modules(on_cpu: bool) -> list:
    from sglang_npr.patches import (
        cpu_release_memory,
        cpu_rotary,
        internal_state,
        logits_capture,
        meta_info_streamer,
        meta_info_tokenizer,
        positions,
        request_intake,
        scheduler_abort,
        scheduler_idle,
        scheduler_overlap,
        scheduler_queue,
        scheduler_result,
        scheduler_run,
        scheduler_step,
        server_info,
        worker_forward,
    )

    modules = [server_info, internal_state, request_intake, scheduler_queue, scheduler_step, scheduler_run, scheduler_result,
               scheduler_overlap, scheduler_idle, scheduler_abort, worker_forward, logits_capture, positions,
               meta_info_streamer, meta_info_tokenizer]
    if on_cpu:
        modules += [cpu_rotary, cpu_release_memory]
    return modules


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _register_with_sglang() -> None:
    check_host_version("sglang")
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS, register_attention_backend
    from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices

    from sglang_npr.backend import NAME, create_npr_backend

    if NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([NAME])
    if ATTENTION_BACKENDS.get(NAME) is not create_npr_backend:
        register_attention_backend(NAME)(create_npr_backend)
    for module in _patch_modules(on_cpu=not _has_cuda()):
        install_patch(module)


_ONCE = Once(_register_with_sglang)


def register() -> None:
    """Called by SGLang's plugin loader in the launcher, engine and scheduler processes. Idempotent.

    Raises HostVersionError when SGLang is missing or outside the supported range. (SGLang's loader logs
    a plugin's exception and goes on; "npr" then stays an invalid --attention-backend choice.)
    """
    _ONCE()


def is_registered() -> bool:
    return _ONCE.done
