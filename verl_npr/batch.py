"""Fork-join trajectories as the fields verl's actor reads: NPR position ids from the layout, and the
structure as per-sample `multi_modal_inputs` (verl concatenates those on dim 0 into model kwargs, in
packed and padded mode alike; the attention "npr" reads them). The agent loop `npr_parallel` writes
the same fields per sample (`sample_fields`); `make_data_proto` builds a whole padded batch.

A structurally invalid trajectory keeps its tokens but gets an all-zero `response_mask` row: no
gradient, and PAPO leaves it out of the reward statistics (verl_npr.papo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from npr.masks import STRUCTURE_KEYS, attention_kwargs


def training_error(layout: Any, finish_reason: str | None, num_response_tokens: int) -> str | None:
    """Why a trajectory gets no gradient (DESIGN §6 structural filtering), or None when it trains: its
    layout is valid, it stopped by itself (finish_reason "stop": not cut by a limit, not aborted) and it
    has a response. The one home of the "this row trains" rule."""
    if not layout.is_valid:
        return layout.error or "invalid layout"
    if finish_reason != "stop":
        return f"finish_reason {finish_reason!r}"
    if num_response_tokens <= 0:
        return "empty response"
    return None


def trains(layout: Any, finish_reason: str | None, num_response_tokens: int) -> bool:
    """Whether a trajectory gets gradient (see `training_error`)."""
    return training_error(layout, finish_reason, num_response_tokens) is None


@dataclass(frozen=True)
class Sample:
    """One trajectory: prompt and linearised response ids, the Layout of prompt+response, whether it
    trains (structurally valid and complete), and optionally the engine's per-token log-probs."""

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    layout: Any
    is_valid: bool = True
    rollout_log_probs: Sequence[float] | None = None

    def __post_init__(self):
        length = len(self.prompt_ids) + len(self.response_ids)
        if len(self.layout) != length or self.layout.response_start != len(self.prompt_ids):
            raise ValueError(f"layout covers {len(self.layout)} tokens from response_start "
                             f"{self.layout.response_start}, but prompt+response has {length} tokens with a "
                             f"{len(self.prompt_ids)}-token prompt; build it with npr.layout.build_layout(prompt + "
                             "response, tags, len(prompt))")
        if self.rollout_log_probs is not None and len(self.rollout_log_probs) != len(self.response_ids):
            raise ValueError(f"{len(self.rollout_log_probs)} rollout log-probs for {len(self.response_ids)} "
                             "response tokens; pass one per response token")

    @classmethod
    def from_decoded(cls, result: Any, is_valid: bool | None = None) -> "Sample":
        """From an `npr.decoding` result (or anything with prompt_ids, token_ids, logprobs, layout).
        Valid by default when it trains (`trains`: valid layout, stopped by itself, non-empty)."""
        if is_valid is None:
            is_valid = trains(result.layout, getattr(result, "finish_reason", "stop"), len(result.token_ids))
        return cls(list(result.prompt_ids), list(result.token_ids), result.layout, is_valid, list(result.logprobs))


def structure_inputs(layout: Any) -> dict[str, torch.Tensor]:
    """Per-sample `multi_modal_inputs` carrying the structure (npr.masks.STRUCTURE_KEYS, 1-D tensors)."""
    kwargs = attention_kwargs(layout)
    return {key: kwargs[key] for key in STRUCTURE_KEYS}


def sample_fields(sample: Sample) -> dict[str, torch.Tensor | dict]:
    """The unpadded per-sample fields an agent loop hands verl: input_ids [L], position_ids [L] (NPR
    positions), response_mask [R] (all zero when invalid) and multi_modal_inputs."""
    response_len = len(sample.response_ids)
    mask = torch.full((response_len,), int(sample.is_valid), dtype=torch.long)
    return {"input_ids": torch.tensor([*sample.prompt_ids, *sample.response_ids], dtype=torch.long),
            "position_ids": sample.layout.position_ids.to(torch.long).clone(), "response_mask": mask,
            "multi_modal_inputs": structure_inputs(sample.layout)}


def make_data_proto(samples: Sequence[Sample], pad_token_id: int, max_prompt_length: int | None = None,
                    max_response_length: int | None = None):
    """verl DataProto of `samples` in verl's rollout layout: prompts left-padded to max_prompt_length,
    responses right-padded to max_response_length (defaults: the longest), with prompts, responses,
    input_ids, attention_mask, position_ids, response_mask [, rollout_log_probs] and per-sample
    multi_modal_inputs. Raises ValueError for an empty batch or a sample longer than the limits."""
    from verl import DataProto

    if not samples:
        raise ValueError("make_data_proto needs at least one Sample")
    prompt_len = max_prompt_length or max(len(s.prompt_ids) for s in samples)
    response_len = max_response_length or max(len(s.response_ids) for s in samples)
    batch = len(samples)
    prompts = torch.full((batch, prompt_len), pad_token_id, dtype=torch.long)
    responses = torch.full((batch, response_len), pad_token_id, dtype=torch.long)
    attention = torch.zeros(batch, prompt_len + response_len, dtype=torch.long)
    positions = torch.zeros(batch, prompt_len + response_len, dtype=torch.long)
    response_mask = torch.zeros(batch, response_len, dtype=torch.long)
    log_probs = torch.zeros(batch, response_len, dtype=torch.float32)
    for row, sample in enumerate(samples):
        p, r = len(sample.prompt_ids), len(sample.response_ids)
        if p > prompt_len or r > response_len:
            raise ValueError(f"sample {row} has a {p}-token prompt and a {r}-token response, beyond the limits "
                             f"{prompt_len} / {response_len}; raise max_prompt_length / max_response_length")
        fields = sample_fields(sample)
        prompts[row, prompt_len - p:] = fields["input_ids"][:p]
        responses[row, :r] = fields["input_ids"][p:]
        attention[row, prompt_len - p: prompt_len + r] = 1
        positions[row, prompt_len - p: prompt_len + r] = fields["position_ids"]
        response_mask[row, :r] = fields["response_mask"]
        if sample.rollout_log_probs is not None:
            log_probs[row, :r] = torch.tensor(sample.rollout_log_probs, dtype=torch.float32)
    tensors = {"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
               "attention_mask": attention, "position_ids": positions, "response_mask": response_mask}
    if all(s.rollout_log_probs is not None for s in samples):
        tensors["rollout_log_probs"] = log_probs
    mm = np.empty(batch, dtype=object)
    mm[:] = [structure_inputs(s.layout) for s in samples]
    return DataProto.from_dict(tensors=tensors, non_tensors={"multi_modal_inputs": mm})
