"""Patch (LEDGER.md): verl 0.9.1 `initialize_global_process_group_ray` builds the backend string
"cpu:gloo,{device}:{backend}", which on the cpu platform is "cpu:gloo,cpu:gloo" and torch rejects
("Duplicate device type cpu"). On the cpu platform only, a missing backend becomes "gloo". Its
torchrun twin `initialize_global_process_group` (used by verl's SFT trainer) builds the same string
with no backend argument: on the cpu platform only, the wrapper initialises "gloo" itself.
Removal: when verl builds a valid backend string for a cpu device, or takes it from the platform."""

from __future__ import annotations

import functools
import sys

from npr.versions import check_host_version

TARGET = "verl.utils.distributed.initialize_global_process_group_ray"
SUPPORTED = ">=0.9.1,<0.10"
# modules of verl 0.9.1 that bind the function by name (`from verl.utils.distributed import ...`)
USERS = ("verl.workers.engine_workers", "verl.checkpoint_engine.base")


def _patched(original):
    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        from verl.utils.device import get_device_name

        if backend is None and get_device_name() == "cpu":
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray.__npr_original__ = original
    return initialize_global_process_group_ray


GLOBAL_TARGET = "verl.utils.distributed.initialize_global_process_group"


def _patched_global(original):
    @functools.wraps(original)
    def initialize_global_process_group(timeout_second=36000):
        import os
        from datetime import timedelta

        import torch.distributed
        from verl.utils.device import get_device_name

        if get_device_name() != "cpu":
            return original(timeout_second)
        # the original's body with backend "gloo" (it would pass "cpu:gloo,cpu:gloo"); set_device is a no-op on cpu
        torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_second),
                                             init_method=os.environ.get("DIST_INIT_METHOD", None))
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group.__npr_original__ = original
    return initialize_global_process_group


def apply() -> None:
    """Install the wrapper in verl.utils.distributed and in the modules that imported it. Idempotent."""
    check_host_version("verl", SUPPORTED)
    import importlib

    import verl.utils.distributed as dist

    current = dist.initialize_global_process_group_ray
    if getattr(current, "__npr_original__", None) is None:
        dist.initialize_global_process_group_ray = _patched(current)
    if getattr(dist.initialize_global_process_group, "__npr_original__", None) is None:
        # verl.trainer.sft_trainer.run_sft imports it from verl.utils.distributed at call time
        dist.initialize_global_process_group = _patched_global(dist.initialize_global_process_group)
    wrapper = dist.initialize_global_process_group_ray
    for name in USERS:
        module = sys.modules.get(name) or importlib.import_module(name)
        if getattr(module, "initialize_global_process_group_ray", None) is wrapper.__npr_original__:
            module.initialize_global_process_group_ray = wrapper
