"""Patch (LEDGER.md): verl 0.9.1 `sglang_rollout.ServerAdapter._init_server_adapter` instantiates
`AsyncHttpServerAdapter`, which is abstract under SGLang 0.5.23 (`begin_weight_update` /
`end_weight_update` on EngineBase). The module's name is rebound to a concrete subclass.
Removal: when verl's adapter implements the weight-update session."""

from __future__ import annotations

from npr.versions import check_host_version

TARGET = "verl.workers.rollout.sglang_rollout.sglang_rollout.AsyncHttpServerAdapter"
VERL_VERSIONS = ">=0.9.1,<0.10"


def apply(adapter_cls: type) -> None:
    """Rebind the name to `adapter_cls` (a subclass of verl's adapter). Idempotent."""
    check_host_version("verl", VERL_VERSIONS)
    from verl.workers.rollout.sglang_rollout import sglang_rollout

    current = sglang_rollout.AsyncHttpServerAdapter
    if current is adapter_cls:
        return
    if not issubclass(adapter_cls, current):
        raise TypeError(f"{adapter_cls.__name__} must subclass verl's {current.__name__} to replace it")
    sglang_rollout.AsyncHttpServerAdapter = adapter_cls
