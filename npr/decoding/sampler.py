"""Token choice: logits processors, in-step repetition penalty, temperature, top-k, top-p, and one
RNG per sequence (its seed from `npr.forkjoin.derive_seed`)."""

from __future__ import annotations

from typing import Protocol

import torch

from npr.decoding.config import SamplingParams
from npr.forkjoin import Seq


class LogitsProcessor(Protocol):
    """Changes the logits a token is chosen from (never the reported log-probs). logits: [V] float."""

    def __call__(self, seq: Seq, logits: torch.Tensor) -> torch.Tensor: ...


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator on `device` seeded with `seed` (one per sequence: see npr.forkjoin.derive_seed)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def apply_step_repetition_penalty(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty over the tokens already written in the current step (penalty 1.0 = off)."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)), device=logits.device)
    picked = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Choose one token from processed logits [V]."""
    if params.is_greedy:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, -1) >= params.top_p  # keep the token crossing top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits.float(), -1)
    return int(torch.multinomial(probs, 1, generator=generator))
