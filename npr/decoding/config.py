"""Frozen, validated configuration of the reference decoder: engine limits and per-call sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from npr.forkjoin.limits import Limits, check_int
from npr.schema import DEFAULT_MAX_BRANCHES


@dataclass(frozen=True)
class DecodingConfig:
    """The fork-join limits (DESIGN §5; validated and held as `npr.forkjoin.Limits` in `.limits`) plus
    the reference decoder's own engine settings.

    max_new_tokens bounds the critical path of a response; max_total_tokens bounds all generated
    tokens (None = max_branches * max_new_tokens). A fork is refused (the request goes on
    sequentially) when fewer than min_fork_budget tokens are left on the critical path, or per branch
    of the total budget. parallel=False never forks: plain sequential decoding (a baseline).

    Engine settings: step_repetition_penalty (1.0 = off); max_kv_slots bounds the K/V pool (None =
    it grows with the tokens in flight; when bounded, requests wait and the latest admitted are
    preempted and restarted); max_batch bounds the requests decoded at once (None = all);
    use_cuda_graphs is accepted for compatibility and currently unused (steps run eagerly).
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
    max_batch: int | None = None
    limits: Limits = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        limits = Limits(self.max_branches, self.max_new_tokens, self.max_total_tokens, self.min_fork_budget,
                        self.parallel, self.stop_token_ids)
        object.__setattr__(self, "limits", limits)
        object.__setattr__(self, "stop_token_ids", limits.stop_token_ids)
        if not (isinstance(self.step_repetition_penalty, (int, float)) and 0 < self.step_repetition_penalty < math.inf):
            raise ValueError(f"step_repetition_penalty must be a finite number > 0 (1.0 = off), "
                             f"got {self.step_repetition_penalty!r}")
        if self.max_kv_slots is not None:
            check_int("max_kv_slots", self.max_kv_slots, 2)
        if self.max_batch is not None:
            check_int("max_batch", self.max_batch, 1)

    @property
    def total_budget(self) -> int:
        return self.limits.total_budget


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling. temperature=0 is greedy. seed=None draws one from torch's global RNG."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        check_int("top_k", self.top_k, 0)
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0

