"""verl platform `cpu` (verl 0.9.1 has none: with no GPU it falls back to `nvidia` and calls CUDA).

Selected with VERL_PLATFORM=cpu, never by auto-detection. gloo collectives, current_device() "cpu"
(verl moves tensors with `.to(get_device_id())`), allocator statistics as zeros, and the FSDP
language-model engine registered for the cpu device (use `strategy=fsdp2`: FSDP1 refuses CPU params).
Importing this module imports verl's platform layer only; `register_cpu_platform` does the work."""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

from verl_npr.registries import REGISTRY_LOCK

NAME = "cpu"
ENV = "VERL_PLATFORM"


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _mem_get_info(device: Any = None) -> tuple[int, int]:
    """(free, total) bytes of host memory."""
    try:
        import psutil

        mem = psutil.virtual_memory()
        return int(mem.available), int(mem.total)
    except ImportError:  # pragma: no cover - psutil comes with ray
        return 0, 0


class _CpuDeviceModule(types.ModuleType):
    """`torch.cpu` plus the `torch.cuda`-style calls verl makes on its device module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)


device_module = _CpuDeviceModule("verl_npr.platform.device_module")
device_module.__dict__.update(
    empty_cache=_nothing, ipc_collect=_nothing, set_per_process_memory_fraction=_nothing,
    reset_peak_memory_stats=_nothing, memory_allocated=_zero, memory_reserved=_zero,
    max_memory_allocated=_zero, max_memory_reserved=_zero, memory_stats=lambda *a, **k: {},
    mem_get_info=_mem_get_info, get_device_name=lambda *a, **k: "cpu",
    get_rng_state=lambda *a, **k: torch.get_rng_state(), set_rng_state=lambda state, *a, **k: torch.set_rng_state(state),
    manual_seed=lambda seed: torch.manual_seed(seed), manual_seed_all=lambda seed: torch.manual_seed(seed),
    set_device=_nothing, current_device=lambda: "cpu", device_count=lambda: 1, is_available=lambda: True,
)


class CpuPlatform(PlatformBase):
    """verl on host CPUs: gloo, device "cpu". Reports its Ray resource as "GPU" because verl's
    placement counts only accelerator bundles; declare as many (fake) GPUs to Ray as workers."""

    device_name = "cpu"
    vendor_name = "cpu"
    device_module = device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # only an explicit VERL_PLATFORM=cpu selects it

    def current_device(self):  # a device string, so `.to(get_device_id())` stays on the host
        return "cpu"

    def device_count(self) -> int:
        return 1

    set_device = synchronize = set_allocator_settings = empty_cache = staticmethod(_nothing)
    profiler_start = profiler_stop = staticmethod(_nothing)

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def is_selected() -> bool:
    """True when VERL_PLATFORM selects this platform."""
    return os.environ.get(ENV, "").strip().lower() == NAME


def register_cpu_platform() -> None:
    """Register `cpu` in verl's PlatformRegistry; when VERL_PLATFORM=cpu, also register verl's FSDP
    engines for the cpu device and apply the gloo process-group patch. Idempotent."""
    from verl.plugin.platform import PlatformRegistry

    with REGISTRY_LOCK:
        existing = PlatformRegistry.get(NAME)
        if existing is not CpuPlatform:
            PlatformRegistry.register(NAME)(CpuPlatform)
        if is_selected():
            _register_engines_for_cpu()
            from verl_npr.patches.gloo_process_group import apply

            apply()


def _register_engines_for_cpu() -> None:
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        backends = EngineRegistry._engines.get(model_type, {})
        missing = [b for b in ("fsdp", "fsdp2") if NAME not in backends.get(b, {})]
        if missing:
            EngineRegistry.register(model_type=model_type, backend=missing, device=NAME)(engine)
