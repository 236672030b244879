"""verl 0.9.1's SGLang rollout made to work with SGLang 0.5.23 (both defects hit GPU runs of that pair):

* `SGLangHttpServer.launch_server` calls `dataclasses.fields(ServerArgs)`, but 0.5.23's ServerArgs
  is a msgspec struct (TypeError);
* `AsyncHttpServerAdapter` is abstract in 0.5.23 (`begin_weight_update` / `end_weight_update` on
  `EngineBase`), and the scheduler refuses weight updates outside such a session.

Registered here without importing SGLang: verl's replica loader "sglang" (public
`RolloutReplicaRegistry`) and its in-worker adapter entry `("sglang", "async")` point at the
subclasses in `verl_npr.sglang_rollout`, which apply the two ledgered patches when first used."""

from __future__ import annotations

import os

from packaging.version import Version

from npr.versions import installed_version
from verl_npr.registries import REGISTRY_LOCK

# SGLang versions whose ServerArgs is a msgspec struct and whose EngineBase has the weight-update session
NEEDS_COMPAT_FROM = Version("0.5.23")
ADAPTER = "verl_npr.sglang_rollout.NprSGLangServerAdapter"


def needs_compat(sglang_version: str | None = None) -> bool:
    """True when the installed SGLang (from package metadata; SGLang is not imported) needs the fixes."""
    version = sglang_version or installed_version("sglang")
    return version is not None and Version(version) >= NEEDS_COMPAT_FROM


def register_sglang_compat() -> bool:
    """Route verl's "sglang" rollout through NPR's compatible subclasses when SGLang needs them.
    Idempotent; returns whether anything is routed."""
    if not needs_compat():
        return False
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    with REGISTRY_LOCK:
        RolloutReplicaRegistry.register("sglang", load_replica)
        base._ROLLOUT_REGISTRY[("sglang", "async")] = ADAPTER
    return True


def load_replica():
    """Loader registered as "sglang" in verl's RolloutReplicaRegistry: NPR's replica class. On the cpu
    platform SGLang is imported as is (verl's own loader sets SGLANG_USE_CPU_ENGINE=1, which selects
    SGLang's sgl_kernel CPU engine that no PyPI package provides); elsewhere verl's loader runs first."""
    from verl_npr.platform import is_selected

    if is_selected():
        os.environ.pop("SGLANG_USE_CPU_ENGINE", None)
    else:
        from verl.workers.rollout.replica import _load_sglang

        _load_sglang()
    from verl_npr.sglang_rollout import NprSGLangReplica

    return NprSGLangReplica
