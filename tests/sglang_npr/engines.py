"""Helpers (not a test module) for tests that run the real sglang.Engine on CPU: the settings that work
on this machine (docs: /work/shared/notes/cpu-hosts.md) and a tiny Qwen3 saved to a directory."""

from __future__ import annotations

import contextlib
from typing import Iterator

CPU_ENGINE_ARGS = dict(device="cpu", disable_cuda_graph=True, dtype="float32", mem_fraction_static=0.3,
                       max_total_tokens=4096, max_running_requests=16, log_level="error", random_seed=0)


@contextlib.contextmanager
def cpu_engine(model_path: str, attention_backend: str, **overrides) -> Iterator:
    """A real sglang.Engine on CPU (scheduler subprocess, KV pools, radix cache), shut down on exit."""
    import sglang

    engine = sglang.Engine(model_path=model_path, attention_backend=attention_backend,
                           **{**CPU_ENGINE_ARGS, **overrides})
    try:
        yield engine
    finally:
        engine.shutdown()


def save_tiny_model(directory, seed: int = 0) -> str:
    from npr.tiny import save_tiny

    return save_tiny(directory, seed=seed)
