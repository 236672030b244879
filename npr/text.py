"""The text level of the schema: the same grammar (`npr.schema.Tracker`) over a response *text*, for
people, Stage-1 text rewards and data conversion. Offsets are character offsets. Also the one
definition of a response's final-answer region (`final_region`). Pure Python."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from npr.schema import DEFAULT_MAX_BRANCHES, TAG_STRINGS, Event, Issue, Phase, TagIds, Tracker

# Pseudo ids used when the grammar runs over text pieces instead of token ids (content pieces are 0).
TEXT_TAG_IDS = TagIds(*range(-1, -9, -1))
_TEXT_CONTENT = 0
_TAG_RE = re.compile("(" + "|".join(re.escape(s) for s in TAG_STRINGS) + ")")
_TEXT_ID_OF = TEXT_TAG_IDS.by_text


@dataclass(frozen=True)
class TextPiece:
    """A tag or a run of content in a text, with its character span and grammar assignment."""

    text: str
    start: int
    is_tag: bool
    phase: Phase  # phase the piece was read in (before the piece's own transition)
    block_id: int
    branch_id: int


@dataclass
class TextBlock:
    """One parallel block of a text: the plans, steps and takeaway as written (tags stripped)."""

    start: int
    end: int = -1
    is_forked: bool = False
    plans: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    takeaway: str | None = None


@dataclass
class ParsedText:
    """Result of `parse_text`: blocks, every grammar issue, the text outside tags and the final part."""

    text: str
    pieces: list[TextPiece]
    blocks: list[TextBlock]
    issues: list[Issue]
    outside: list[tuple[int, str]]  # non-blank content a block does not own (before/between blocks, separators)
    final: str  # text after the last block (the whole text when there is no block)

    @property
    def is_valid(self) -> bool:
        return not self.issues


def split_text(text: str) -> list[tuple[int, str]]:
    """Split a text into (char offset, piece) where each piece is a tag or a run of content."""
    out: list[tuple[int, str]] = []
    pos = 0
    for part in _TAG_RE.split(text):
        if part:
            out.append((pos, part))
        pos += len(part)
    return out


def parse_text(text: str, max_branches: int = DEFAULT_MAX_BRANCHES) -> ParsedText:
    """Parse a response text with the same grammar as the token-level `Tracker`. Never raises.

    Issue offsets are character offsets into `text`.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_text expects str, got {type(text).__name__}")
    tracker = Tracker(TEXT_TAG_IDS, max_branches)
    pieces: list[TextPiece] = []
    blocks: list[TextBlock] = []
    outside: list[tuple[int, str]] = []
    starts: list[int] = []
    open_content: dict[str, Any] = {}  # which container collects content right now
    for start, piece in split_text(text):
        is_tag = piece in _TEXT_ID_OF
        before = tracker.phase
        event = tracker.feed(_TEXT_ID_OF[piece] if is_tag else _TEXT_CONTENT)
        starts.append(start)
        pieces.append(TextPiece(piece, start, is_tag, before, tracker.block_id, tracker.branch_id))
        _collect(pieces[-1], event, tracker, blocks, outside, open_content)
    issues = tracker.finish()
    # Map item offsets back to character offsets.
    issues = [Issue(i.name, starts[i.offset] if i.offset < len(starts) else len(text), i.detail) for i in issues]
    for block in blocks:
        if block.end < 0:
            block.end = len(text)
    if blocks:
        final_start = blocks[-1].end
        final = text[final_start:]
        if outside and outside[-1][0] >= final_start:
            outside.pop()  # the final answer is not "outside text"
    else:
        final = text
    return ParsedText(text, pieces, blocks, issues, outside, final)


def _collect(piece: TextPiece, event: Event, tracker: Tracker, blocks: list[TextBlock],
             outside: list[tuple[int, str]], state: dict[str, Any]) -> None:
    """Route one text piece into the block structure (helper of parse_text)."""
    tags = TEXT_TAG_IDS
    if piece.is_tag:
        tag = _TEXT_ID_OF[piece.text]
        if tag == tags.guideline_open and tracker.phase is Phase.GUIDELINE and piece.phase in (Phase.OUTSIDE, Phase.TAKEAWAY):
            if blocks and blocks[-1].end < 0:
                blocks[-1].end = piece.start
            blocks.append(TextBlock(start=piece.start))
            state.clear()
        elif not blocks:
            return
        block = blocks[-1]
        if event is Event.FORK:
            block.is_forked = True
        if tag == tags.plan_open and piece.phase is Phase.GUIDELINE:
            block.plans.append("")
            state["into"] = ("plans", len(block.plans) - 1)
        elif tag == tags.plan_close and piece.phase is Phase.GUIDELINE:
            state.pop("into", None)
        elif tag == tags.guideline_close and piece.phase is Phase.GUIDELINE:
            state.pop("into", None)  # closes an unclosed plan too: what follows is not plan text
            if event is Event.NO_FORK:
                block.end = piece.start + len(piece.text)  # no fork: the block is just the guideline
        elif event is Event.BRANCH_START:
            block.steps.append("")
            state["into"] = ("steps", len(block.steps) - 1)
        elif event is Event.STEP_END:
            state.pop("into", None)
        elif event is Event.JOIN:
            block.takeaway = ""
            state["into"] = ("takeaway", None)
        elif tag == tags.takeaway_close and piece.phase is Phase.TAKEAWAY:
            state.pop("into", None)
            block.end = piece.start + len(piece.text)
        elif "into" in state:
            _append(block, state["into"], piece.text)  # a tag kept as content (flagged by the tracker)
        return
    if "into" in state and blocks:
        _append(blocks[-1], state["into"], piece.text)
    elif piece.text.strip():
        outside.append((piece.start, piece.text))


def _append(block: TextBlock, into: tuple[str, int | None], text: str) -> None:
    kind, index = into
    if kind == "takeaway":
        block.takeaway = (block.takeaway or "") + text
    else:
        getattr(block, kind)[index] += text


def final_region(text: str) -> str:
    """The part of a response that carries its final answer: the text after its last block (after the
    last `</takeaway>`, or after a `</guideline>` that does not fork); the whole text when it has no
    block; empty when it ends inside a block (the response never reached an answer)."""
    return parse_text(text).final
