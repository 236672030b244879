"""The one place that registers NPR with verl. Idempotent; imports verl lazily and checks its version first."""

from __future__ import annotations

from npr.once import Once
from npr.versions import check_host_version


def _register_with_verl() -> None:
    check_host_version("verl")
    import verl  # noqa: F401  (the host must be importable before anything is registered)

    from verl_npr.reward_manager import register_reward_manager

    register_reward_manager()


_ONCE = Once(_register_with_verl)


def register() -> None:
    """Register NPR's components in verl's registries. Safe to call any number of times.

    Raises HostVersionError when verl is missing or outside the supported range.
    """
    _ONCE()


def is_registered() -> bool:
    return _ONCE.done
