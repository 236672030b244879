"""CPU only: SGLang 0.5.23's release_memory_occupation (verl's sleep) ends with
`torch.get_device_module().synchronize()`, which on a CUDA-built torch without a GPU resolves to
torch.cuda and kills the scheduler ("Found no NVIDIA driver"). When the model runs on CPU, the call
runs with that module's `torch` seen through a view whose get_device_module() is torch.cpu."""

from __future__ import annotations

import types

TARGET = ("sglang.srt.managers.scheduler_components.weight_updater."
          "SchedulerWeightUpdaterManager.release_memory_occupation")


class _CpuTorchView(types.ModuleType):
    """`torch` with get_device_module() answering torch.cpu; every other name is torch's own."""

    def __init__(self, torch_module):
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def get_device_module(self, device=None):
        return self._torch.cpu if device is None else self._torch.get_device_module(device)


def _runs_on_cpu(manager) -> bool:
    runner = getattr(getattr(manager, "tp_worker", None), "model_runner", None)
    return str(getattr(runner, "device", "")).startswith("cpu")


def release_on_cpu(original, self, *args, **kwargs):
    if not _runs_on_cpu(self):
        return original(self, *args, **kwargs)
    module = __import__(original.__module__, fromlist=["torch"])
    real = module.torch
    module.torch = _CpuTorchView(real)
    try:
        return original(self, *args, **kwargs)
    finally:
        module.torch = real


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, release_on_cpu, HookType.AROUND)
