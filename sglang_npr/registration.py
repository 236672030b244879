"""The one place that registers NPR with SGLang. Idempotent; imports SGLang lazily and checks its version first."""

from __future__ import annotations

import os
import threading

from npr.versions import check_host_version

_LOCK = threading.Lock()
_REGISTERED = False


def is_registered() -> bool:
    return _REGISTERED


def register() -> None:
    """Called by SGLang's plugin loader in the launcher, engine and scheduler processes. Idempotent.

    Raises HostVersionError when SGLang is missing or outside the supported range.
    """
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        if not os.environ.get("NPR_SKIP_VERSION_CHECK"):
            check_host_version("sglang")
        import sglang.srt.plugins  # noqa: F401

        _REGISTERED = True
