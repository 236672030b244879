"""The fork-join limits of DESIGN §5, validated once. Engine settings (KV slots, CUDA graphs,
repetition penalty) belong to each engine's own config, not here."""

from __future__ import annotations

from dataclasses import dataclass

from npr.schema import DEFAULT_MAX_BRANCHES


@dataclass(frozen=True)
class Limits:
    """max_new_tokens bounds a response's critical path; max_total_tokens bounds all its generated
    tokens (None = max_branches * max_new_tokens). A fork is refused (the request goes on
    sequentially) when fewer than min_fork_budget tokens are left on the critical path, or per branch
    of the total budget. parallel=False never forks: plain sequential decoding (a baseline)."""

    max_branches: int = DEFAULT_MAX_BRANCHES
    max_new_tokens: int = 1024
    max_total_tokens: int | None = None
    min_fork_budget: int = 8
    parallel: bool = True
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        check_int("max_branches", self.max_branches, 1)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.max_total_tokens is not None:
            check_int("max_total_tokens", self.max_total_tokens, 1)
        check_int("min_fork_budget", self.min_fork_budget, 0)
        if not isinstance(self.parallel, bool):
            raise TypeError(f"parallel must be a bool, got {self.parallel!r}")
        try:
            stops = tuple(int(t) for t in self.stop_token_ids)
        except (TypeError, ValueError):
            raise TypeError(f"stop_token_ids must be a sequence of ints, got {self.stop_token_ids!r}") from None
        object.__setattr__(self, "stop_token_ids", stops)

    @property
    def total_budget(self) -> int:
        return self.max_total_tokens if self.max_total_tokens is not None else self.max_branches * self.max_new_tokens


def check_int(name: str, value, minimum: int) -> None:
    """Raise ValueError naming `name` unless `value` is an int (not a bool) >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
