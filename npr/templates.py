"""Canonical token ids shared by the engines (the forced headers of a fork and a join) and SFT data
conversion (text -> ids segment by segment). Pure Python: the engine protocol imports it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from npr.schema import TAGS, TagIds
from npr.text import split_text


_HEADER_RE = re.compile(r"\n(\d+):")
Encode = Callable[[str], list[int]]


def make_encode(tokenizer: Any) -> Encode:
    """Content encoder of a HF tokenizer: no special tokens added, returns list[int]."""
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False)) if text else []


@dataclass(frozen=True)
class Templates:
    """Token-id templates shared by the engines (forced tokens) and SFT data conversion.

    Canonical block: <guideline> G </guideline> [<step> h_i C_i </step>]_{i=1..n} <takeaway> T </takeaway>
    with h_i = "\\n{i}:" (the engine writes `<step> h_i` at the fork and `<takeaway>` at the join).
    """

    tags: TagIds
    encode: Encode

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "Templates":
        return cls(TagIds.from_tokenizer(tokenizer), make_encode(tokenizer))

    def branch_header(self, index: int) -> list[int]:
        """Forced ids that open branch `index` (1-based): <step> + ids("\\n{index}:")."""
        if index < 1:
            raise ValueError(f"branch index is 1-based, got {index}")
        return [self.tags.step_open] + self.encode(f"\n{index}:")

    def join_header(self) -> list[int]:
        """Forced ids written at the join."""
        return [self.tags.takeaway_open]

    def block_ids(self, plans: Sequence[str], steps: Sequence[str], takeaway: str) -> list[int]:
        """Canonical ids of one block from its parts (step texts without the forced header)."""
        t = self.tags
        out = [t.guideline_open]
        for plan in plans:
            out += [t.plan_open] + self.encode(plan) + [t.plan_close]
        out.append(t.guideline_close)
        for i, step in enumerate(steps, start=1):
            out += self.branch_header(i) + self.encode(step) + [t.step_close]
        out += self.join_header() + self.encode(takeaway) + [t.takeaway_close]
        return out

    def text_to_ids(self, text: str) -> list[int]:
        """Ids of a response text, segment by segment: each tag is its id, each content run is encoded
        on its own, and a step's leading "\\n{i}:" header is encoded apart from the step's content."""
        tag_id = self.tags.by_text
        out: list[int] = []
        after_step_open = False
        for _, piece in split_text(text):
            if piece in tag_id:
                out.append(tag_id[piece])
                after_step_open = piece == TAGS["step_open"]
                continue
            if after_step_open and (m := _HEADER_RE.match(piece)):
                out += self.encode(m.group(0))
                piece = piece[m.end():]
            out += self.encode(piece)
            after_step_open = False
        return out


def render_block_text(plans: Sequence[str], steps: Sequence[str], takeaway: str) -> str:
    """The text of a canonical block (what `Templates.block_ids` encodes)."""
    g = "".join(f"{TAGS['plan_open']}{p}{TAGS['plan_close']}" for p in plans)
    s = "".join(f"{TAGS['step_open']}\n{i}:{c}{TAGS['step_close']}" for i, c in enumerate(steps, start=1))
    return (f"{TAGS['guideline_open']}{g}{TAGS['guideline_close']}{s}"
            f"{TAGS['takeaway_open']}{takeaway}{TAGS['takeaway_close']}")
