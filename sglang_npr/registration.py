"""The one place that registers NPR with SGLang. Idempotent; imports SGLang lazily and checks its version first."""

from __future__ import annotations

from npr.once import Once
from npr.versions import check_host_version


def _register_with_sglang() -> None:
    check_host_version("sglang")
    import sglang.srt.plugins  # noqa: F401  (the host must be importable before anything is registered)


_ONCE = Once(_register_with_sglang)


def register() -> None:
    """Called by SGLang's plugin loader in the launcher, engine and scheduler processes. Idempotent.

    Raises HostVersionError when SGLang is missing or outside the supported range.
    """
    _ONCE()


def is_registered() -> bool:
    return _ONCE.done
