"""Scripted structure: logits processors that force a fixed guideline / plan / branch-length script
(or an exact token sequence) on any model, so fork-join paths run without a trained model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from npr.forkjoin import Seq
from npr.templates import Templates

CONTENT = -1  # a script slot that any content token may fill


@dataclass(frozen=True)
class ScriptedStructure:
    """One block per inner list of `branch_lengths` (that many plans and branches, each branch's content
    that many tokens), then `answer_tokens` content tokens and EOS.

    Content tokens are chosen by the model (greedy or sampled) among non-special tokens."""

    branch_lengths: Sequence[Sequence[int]]
    plan_tokens: int = 2
    takeaway_tokens: int = 2
    answer_tokens: int = 3

    def __post_init__(self):
        lengths = tuple(tuple(int(x) for x in block) for block in self.branch_lengths)
        for block in lengths:
            if not block or any(x < 0 for x in block):
                raise ValueError(f"each block needs >= 1 branch of length >= 0, got {list(block)}")
        object.__setattr__(self, "branch_lengths", lengths)

    def bind(self, templates: Templates, eos_token_id: int, content_ids: torch.Tensor) -> "ScriptProcessor":
        return ScriptProcessor(self, templates, eos_token_id, content_ids)


def content_token_ids(tokenizer, model_vocab_size: int, exclude: set[int]) -> torch.Tensor:
    """Ids a script may use as content: tokenizer entries that are not special or excluded and that
    decode on their own to printable text (no stray byte pieces), so scripted output stays readable."""
    special = set(tokenizer.all_special_ids) | set(exclude)
    limit = min(len(tokenizer), model_vocab_size)
    ids = []
    for i in range(limit):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if text and "\ufffd" not in text and text.isprintable():
            ids.append(i)
    if not ids:
        raise ValueError("the tokenizer has no printable non-special token a script could use as content")
    return torch.tensor(ids, dtype=torch.long)


class ScriptProcessor:
    """The bound processor: forces the trunk template and branch lengths, leaves content free."""

    def __init__(self, script: ScriptedStructure, templates: Templates, eos: int, content_ids: torch.Tensor):
        t = templates.tags
        self.script = script
        trunk: list[int] = []
        for block in script.branch_lengths:
            trunk += [t.guideline_open]
            for _ in block:
                trunk += [t.plan_open] + [CONTENT] * script.plan_tokens + [t.plan_close]
            trunk += [t.guideline_close, t.takeaway_open] + [CONTENT] * script.takeaway_tokens + [t.takeaway_close]
        self.trunk = trunk + [CONTENT] * script.answer_tokens + [eos]
        self.eos, self.step_close = eos, t.step_close
        self._content = content_ids
        self._content_mask: torch.Tensor | None = None

    def not_content(self, vocab_size: int, device) -> torch.Tensor:
        """[V] bool: True where a token may NOT fill a content slot."""
        if self._content_mask is None or self._content_mask.device != torch.device(device) \
                or self._content_mask.numel() != vocab_size:
            mask = torch.ones(vocab_size, dtype=torch.bool, device=device)
            mask[self._content.to(device)] = False
            self._content_mask = mask
        return self._content_mask

    def constraint(self, seq: Seq) -> int:
        """What the script allows `seq` to write next: one token id, or CONTENT (any content token)."""
        if seq.is_trunk:
            index = len(seq.tokens)
            return self.trunk[index] if index < len(self.trunk) else self.eos
        block = seq.block - 1
        lengths = self.script.branch_lengths
        wanted = lengths[block][seq.branch - 1] if block < len(lengths) and seq.branch <= len(lengths[block]) else 0
        written = len(seq.tokens) - seq.header_len
        return CONTENT if written < wanted else self.step_close

    def __call__(self, seq: Seq, logits: torch.Tensor) -> torch.Tensor:
        token = self.constraint(seq)
        if token == CONTENT:
            return logits.masked_fill(self.not_content(logits.numel(), logits.device), float("-inf"))
        out = torch.full_like(logits, float("-inf"))
        out[token] = 0.0
        return out


class ForcedTokens:
    """Forces exactly `token_ids` on the trunk (then EOS): replays a trajectory, e.g. sequentially."""

    def __init__(self, token_ids: Sequence[int], eos: int):
        self.token_ids, self.eos = list(token_ids), eos

    def __call__(self, seq: Seq, logits: torch.Tensor) -> torch.Tensor:
        index = len(seq.tokens)
        token = self.token_ids[index] if index < len(self.token_ids) else self.eos
        out = torch.full_like(logits, float("-inf"))
        out[token] = 0.0
        return out
