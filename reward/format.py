"""Format score of a response over the parallel schema (`npr.text.parse_text`): 0.0 for a perfect
trajectory, else minus the sum of the weights of the distinct violations found, floored at -1.0.

Violations are the schema's grammar issues plus content checks on what the parser collected; each is
reported once, by name, in the order of `VIOLATION_WEIGHTS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from npr.schema import DEFAULT_MAX_BRANCHES, TAG_STRINGS, TAGS, Phase
from npr.text import ParsedText, parse_text
from reward.extract import last_boxed

# The one table of violations and their penalty weights (stable names; tests and logs use them).
VIOLATION_WEIGHTS: dict[str, float] = {
    # structure (from the schema grammar)
    "no_block": 0.5,  # no <guideline> block at all
    "plan_count": 0.4,  # a guideline with 0 plans or more than max_branches (it cannot fork)
    "step_count": 0.4,  # steps in a block != plans in its guideline
    "nested_guideline": 0.4,  # a <guideline> inside a guideline, a step or a branch region
    "unclosed_block": 0.4,  # the response ends inside a guideline, a step or before <takeaway> (truncated)
    "unclosed_takeaway": 0.3,  # a takeaway never closed, or closed only by the next <guideline>
    "unclosed_plan": 0.2,  # a <plan> without </plan>
    "unclosed_step": 0.2,  # a <step> ended by the next <step>/<takeaway>, not by </step>
    "stray_tag": 0.2,  # a tag where the grammar allows none (outside blocks, between steps or plans)
    "fork_refused": 0.1,  # token level only (the engine declined a fork); never found in text
    # content (checks on what the parser collected)
    "empty_plan": 0.2,  # a plan with nothing after its "i:" header
    "empty_step": 0.2,  # a step with nothing after its "i:" header
    "empty_takeaway": 0.2,  # a takeaway with no text
    "polluted_plan": 0.2,  # a tag written inside a plan
    "polluted_step": 0.2,  # a tag written inside a step (kept as content by the grammar)
    "polluted_takeaway": 0.2,  # a tag written inside a takeaway
    "text_outside_tags": 0.1,  # text before the first block, between blocks or between steps
    # the final answer (after the last block)
    "missing_boxed": 0.3,  # no complete \boxed{...} after the last block
    "empty_boxed": 0.3,  # \boxed{} with nothing in it
}
MAX_PENALTY = 1.0
_HEADER_RE = re.compile(r"^\s*\d+\s*[:.]")


@dataclass
class FormatReport:
    """`score` in [-1, 0] (0 = perfect), `violations` by name, and the structure seen."""

    score: float
    violations: list[str]
    num_blocks: int = 0
    max_width: int = 0  # most steps in one block
    parsed: ParsedText | None = field(default=None, repr=False)

    @property
    def is_valid(self) -> bool:
        return not self.violations


def penalty_of(violations: list[str] | set[str]) -> float:
    """The format score of a set of violation names: -min(1, sum of weights); unknown names weigh 0.2."""
    total = sum(VIOLATION_WEIGHTS.get(name, 0.2) for name in set(violations))
    return 0.0 - round(min(MAX_PENALTY, total), 6)


def _body(text: str) -> str:
    """Content of a plan/step without its "i:" header."""
    return _HEADER_RE.sub("", text, count=1).strip()


def _has_tag(text: str) -> bool:
    return "<" in text and any(tag in text for tag in TAG_STRINGS)


def _open_plan_flags(parsed: ParsedText) -> list[bool]:
    """For each piece: whether it lies inside an open <plan> of a guideline, i.e. the nearest structural tag
    before it is a guideline's <plan> (not its </plan>, nor a new <guideline>). One forward pass."""
    flags = []
    is_open = False
    for piece in parsed.pieces:
        flags.append(is_open)
        if not piece.is_tag:
            continue
        if piece.phase is Phase.GUIDELINE and piece.text in (TAGS["plan_open"], TAGS["plan_close"]):
            is_open = piece.text == TAGS["plan_open"]
        elif piece.text == TAGS["guideline_open"] and piece.phase is not Phase.GUIDELINE:
            is_open = False
    return flags


def _grammar_violations(parsed: ParsedText) -> set[str]:
    """The parser's issues by name; a stray tag written inside a plan or a takeaway is content pollution,
    reported by the content checks instead."""
    found = set()
    index_at = {piece.start: i for i, piece in enumerate(parsed.pieces)}
    in_open_plan = _open_plan_flags(parsed)
    for issue in parsed.issues:
        if issue.name == "stray_tag" and issue.offset in index_at:
            i = index_at[issue.offset]
            phase = parsed.pieces[i].phase
            if phase is Phase.TAKEAWAY or (phase is Phase.GUIDELINE and in_open_plan[i]):
                continue
        found.add(issue.name)
    return found


def _content_violations(parsed: ParsedText) -> set[str]:
    found = set()
    for block in parsed.blocks:
        for plan in block.plans:
            if _has_tag(plan):
                found.add("polluted_plan")
            if not _body(plan):
                found.add("empty_plan")
        for step in block.steps:
            if _has_tag(step):
                found.add("polluted_step")
            if not _body(step):
                found.add("empty_step")
        if block.takeaway is not None:
            if _has_tag(block.takeaway):
                found.add("polluted_takeaway")
            if not block.takeaway.strip():
                found.add("empty_takeaway")
    if parsed.blocks and parsed.outside:
        found.add("text_outside_tags")  # without blocks the whole text is the answer, not "outside"
    return found


def _answer_violations(final: str) -> set[str]:
    boxed = last_boxed(final)
    if boxed is None:
        return {"missing_boxed"}
    return {"empty_boxed"} if not boxed.strip() else set()


def check_format(response_text: str, max_branches: int = DEFAULT_MAX_BRANCHES) -> FormatReport:
    """Full format report of a response text. Never raises on any text (non-str is converted)."""
    if not isinstance(response_text, str):
        response_text = "" if response_text is None else str(response_text)
    parsed = parse_text(response_text, max_branches=max_branches)
    found = _grammar_violations(parsed) | _content_violations(parsed) | _answer_violations(parsed.final)
    if not parsed.blocks:
        found.add("no_block")
    violations = [name for name in VIOLATION_WEIGHTS if name in found]
    violations += sorted(found - set(VIOLATION_WEIGHTS))  # names a newer schema may add
    return FormatReport(
        score=penalty_of(violations),
        violations=violations,
        num_blocks=len(parsed.blocks),
        max_width=max((len(b.steps) for b in parsed.blocks), default=0),
        parsed=parsed,
    )


def format_score(response_text: str, max_branches: int = DEFAULT_MAX_BRANCHES) -> tuple[float, list[str]]:
    """(score, violations): 0.0 and [] for a perfect trajectory, down to -1.0 as violations add up."""
    report = check_format(response_text, max_branches)
    return report.score, report.violations
