"""The one place that registers NPR with verl. Idempotent; imports verl lazily and checks its version first."""

from __future__ import annotations

from npr.once import Once
from npr.versions import check_host_version


def _register_with_verl() -> None:
    check_host_version("verl")
    import verl  # noqa: F401  (the host must be importable before anything is registered)

    from npr.attention import register_attention
    from verl_npr.papo import register_papo
    from verl_npr.platform import register_cpu_platform
    from verl_npr.reward_manager import register_reward_manager
    from verl_npr.sglang_compat import register_sglang_compat

    register_cpu_platform()  # first: importing verl's agent loop and trainer asks verl for its platform
    register_attention()
    register_papo()
    register_reward_manager()
    register_sglang_compat()
    from verl_npr.agent_loop import register_agent_loop
    from verl_npr.trainer import register_trainer_mode

    register_agent_loop()
    register_trainer_mode()


_ONCE = Once(_register_with_verl)


def register() -> None:
    """Register NPR's components in verl's registries: advantage estimator and policy loss `npr_papo`,
    reward manager `npr`, agent loop `npr_parallel`, v1 trainer mode `npr_sync`, platform `cpu`, the
    transformers attention `npr`, and the SGLang 0.5.23 compatibility of verl's SGLang rollout. Safe to call any number of times.

    Raises HostVersionError when verl is missing or outside the supported range.
    """
    _ONCE()


def is_registered() -> bool:
    return _ONCE.done
