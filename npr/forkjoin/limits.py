"""The fork-join limits of DESIGN §5, declared and validated once (`LimitFields`); every config that
carries them (Limits, DecodingConfig, the wire's NprParams, verl's rollout settings) derives from it.
Engine settings (KV slots, CUDA graphs, repetition penalty) belong to each engine's own config."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from npr.schema import DEFAULT_MAX_BRANCHES

LIMIT_FIELDS = ("max_branches", "max_new_tokens", "max_total_tokens", "min_fork_budget")
_MINIMUMS = {"max_branches": 1, "max_new_tokens": 1, "max_total_tokens": 1, "min_fork_budget": 0}


@dataclass(frozen=True)
class LimitFields:
    """The four fork-join limits and their defaults, the one declaration (DESIGN §5).

    max_new_tokens bounds a response's critical path; max_total_tokens bounds all its generated
    tokens (None = max_branches * max_new_tokens). A fork is refused (the request goes on
    sequentially) when fewer than min_fork_budget tokens are left on the critical path, or per branch
    of the total budget. A subclass that resolves a limit later (a request's own max_new_tokens)
    redeclares it with the default None; `check_limits` then accepts None for it."""

    max_branches: int = DEFAULT_MAX_BRANCHES
    max_new_tokens: int = 1024
    max_total_tokens: int | None = None
    min_fork_budget: int = 8

    def check_limits(self, check: Callable[[str, Any, int], None] | None = None) -> None:
        """Validate the four limits with `check(name, value, minimum)` (default `check_int`: ValueError).
        None passes only for a limit whose default is None in this class."""
        check = check or check_int
        optional = {f.name for f in fields(self) if f.default is None}
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            check(name, value, _MINIMUMS[name])

    def limit_values(self) -> dict[str, Any]:
        """The four limits by name (to build another config that derives from `LimitFields`)."""
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


@dataclass(frozen=True)
class Limits(LimitFields):
    """The fork-join limits a controller runs under (`LimitFields`). parallel=False never forks:
    plain sequential decoding (a baseline); stop_token_ids end a sequence."""

    parallel: bool = True
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        self.check_limits()
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
