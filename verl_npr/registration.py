"""The one place that registers NPR with verl. Idempotent; imports verl lazily and checks its version first."""

from __future__ import annotations

import os
import threading

from npr.versions import check_host_version

_LOCK = threading.Lock()
_REGISTERED = False


def is_registered() -> bool:
    return _REGISTERED


def register() -> None:
    """Register NPR's components in verl's registries. Safe to call any number of times.

    Raises HostVersionError when verl is missing or outside the supported range.
    """
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        if not os.environ.get("NPR_SKIP_VERSION_CHECK"):
            check_host_version("verl")
        import verl  # noqa: F401  (the host must be importable before anything is registered)
        from verl_npr.reward_manager import register_reward_manager

        register_reward_manager()

        _REGISTERED = True
