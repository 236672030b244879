"""The one log-prob rule every engine and the trainer share: a token's log-prob is the log-softmax of
the raw logits (temperature 1, no processors) of the row before it, computed in float64 for a float64
model and float32 otherwise (bf16/fp16 logits are upcast first)."""

from __future__ import annotations

import torch


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 when the model runs in float64 (exactness checks)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dim of raw logits [..., V], per the rule above."""
    return torch.log_softmax(upcast(logits), -1)
