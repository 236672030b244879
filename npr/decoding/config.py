"""Frozen, validated configuration of the reference decoder: engine limits and per-call sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from npr.forkjoin.limits import LimitFields, Limits, check_int


@dataclass(frozen=True)
class DecodingConfig(LimitFields):
    """The fork-join limits (`npr.forkjoin.limits.LimitFields`: max_branches, max_new_tokens,
    max_total_tokens, min_fork_budget; validated and held as `npr.forkjoin.Limits` in `.limits`) plus
    the reference decoder's own engine settings. parallel=False never forks: plain sequential
    decoding (a baseline).

    Engine settings: step_repetition_penalty (1.0 = off); max_kv_slots bounds the K/V pool (None =
    it grows with the tokens in flight; when bounded, requests wait and the latest admitted are
    preempted and restarted); max_batch bounds the requests decoded at once (None = all);
    use_cuda_graphs is accepted for compatibility and currently unused (steps run eagerly).
    """

    step_repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    parallel: bool = True
    max_kv_slots: int | None = None
    use_cuda_graphs: bool = True
    max_batch: int | None = None
    limits: Limits = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        limits = Limits(**self.limit_values(), parallel=self.parallel, stop_token_ids=self.stop_token_ids)
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
        if not 0 <= self.temperature < float("inf"):  # inf and nan too: they end in nan probabilities
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        check_int("top_k", self.top_k, 0)
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0

