"""Frozen, validated configuration of the reference decoder: engine limits and per-call sampling."""

from __future__ import annotations

from dataclasses import dataclass

from npr.schema import DEFAULT_MAX_BRANCHES


@dataclass(frozen=True)
class DecodingConfig:
    """Engine limits (DESIGN §5).

    max_new_tokens bounds the critical path of a response; max_total_tokens bounds all generated
    tokens (None = max_branches * max_new_tokens). A fork is refused (the request goes on
    sequentially) when fewer than min_fork_budget tokens are left on the critical path, or per branch
    of the total budget. parallel=False never forks: plain sequential decoding (a baseline).
    """

    max_branches: int = DEFAULT_MAX_BRANCHES
    max_new_tokens: int = 1024
    max_total_tokens: int | None = None
    min_fork_budget: int = 8
    step_repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    parallel: bool = True
    max_kv_slots: int | None = None
    use_cuda_graphs: bool = True

    def __post_init__(self):
        _check_int("max_branches", self.max_branches, 1)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.max_total_tokens is not None:
            _check_int("max_total_tokens", self.max_total_tokens, 1)
        _check_int("min_fork_budget", self.min_fork_budget, 0)
        if not self.step_repetition_penalty > 0:
            raise ValueError(f"step_repetition_penalty must be > 0 (1.0 = off), got {self.step_repetition_penalty!r}")
        if self.max_kv_slots is not None:
            _check_int("max_kv_slots", self.max_kv_slots, 2)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def total_budget(self) -> int:
        return self.max_total_tokens if self.max_total_tokens is not None else self.max_branches * self.max_new_tokens


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling. temperature=0 is greedy. seed=None draws one from torch's global RNG."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):  # inf and nan too: they end in nan probabilities
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        _check_int("top_k", self.top_k, 0)
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
