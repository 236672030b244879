"""Token choice, one home for every engine (the reference decoder and the SGLang plugin): logits processors, the in-step repetition penalty, and batched sampling on the logits'
device with a counter-based random stream.

A row's draw is a pure function of (its key, its counter, its logits): the key is the sequence's seed
(`npr.forkjoin.derive_seed` of request seed, request, block, branch), the counter the number of tokens
the sequence has already written. So a sequence samples the same token whatever else shares its batch,
on any engine, after a preemption, and on every rank of a tensor-parallel group; no per-row
torch.Generator is needed, so a batch of rows samples in a handful of kernels with no host sync."""

from __future__ import annotations

from typing import Protocol

import torch

from npr.forkjoin import Seq

_M32 = 0xFFFFFFFF


class LogitsProcessor(Protocol):
    """Changes the logits a token is chosen from (never the reported log-probs). logits: [V] float."""

    def __call__(self, seq: Seq, logits: torch.Tensor) -> torch.Tensor: ...


def apply_step_repetition_penalty(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty over the tokens already written in the current step (penalty 1.0 = off)."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)), device=logits.device)
    picked = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 lanes holding values in [0, 2^32): no product
    exceeds 2^63, so it is exact on every device."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """One uniform draw in [0, 1) (float64, 53 random bits) per (key, counter) pair; keys: int64 >= 0
    (63-bit seeds), counters: int64 >= 0. [R] -> [R]."""
    keys, counters = keys.to(torch.int64), counters.to(torch.int64)
    lo, hi, count = keys & _M32, (keys >> 32) & _M32, counters & _M32
    h1 = _mix32(lo ^ _mix32(hi ^ _mix32(count ^ 0x9E3779B9)))
    h2 = _mix32(h1 ^ _mix32((count + 0x85EBCA6B) & _M32) ^ hi)
    return (h1.double() * 2097152.0 + (h2 >> 11).double()) * (2.0 ** -53)


def sample_batch(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                 keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Tokens [R] (int64, on the logits' device) from processed logits [R, V]: temperature 0 is greedy
    (argmax); otherwise temperature, top-k (0 = off) and top-p (1 = off; the token crossing top_p is
    kept), then the inverse CDF, in vocabulary order, at the row's uniform. Rows are independent of each
    other. Pass the per-row parameters [R] as CPU tensors: which kernels run is then decided without a
    device sync."""
    rows, vocab = logits.shape[0], logits.shape[-1]
    device = logits.device
    if rows == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    temperature, top_p, top_k = temperature.double(), top_p.double(), top_k.long()
    greedy_rows = temperature <= 0
    greedy_tokens = torch.argmax(logits, -1)
    if bool(greedy_rows.all()):
        return greedy_tokens
    truncate = bool(((top_k > 0) & (top_k < vocab)).any()) or bool((top_p < 1).any())
    greedy = greedy_rows.to(device)
    x = logits.double()
    # Shift by the row max before dividing: a tiny temperature then sends the others to -inf, never
    # the max to +inf (which would make nan probabilities).
    scale = torch.where(greedy_rows, 1.0, temperature).to(device)
    x = (x - x.max(-1, keepdim=True).values) / scale.unsqueeze(-1)
    if truncate:
        top_k, top_p = top_k.to(device), top_p.to(device)
        ordered, order = torch.sort(x, -1, descending=True)
        ranks = torch.arange(vocab, device=device).unsqueeze(0)
        drop = (top_k > 0).unsqueeze(-1) & (ranks >= top_k.unsqueeze(-1))
        probs = torch.softmax(ordered.masked_fill(drop, float("-inf")), -1)
        drop |= (probs.cumsum(-1) - probs) >= top_p.unsqueeze(-1)
        x = x.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    cdf = torch.softmax(x, -1).cumsum(-1)
    target = uniforms(keys.to(device), counters.to(device)) * cdf[:, -1]
    drawn = torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1).clamp_(max=vocab - 1)
    return torch.where(greedy, greedy_tokens, drawn)
