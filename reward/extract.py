"""Answer extraction: the region holding the final answer, and the answer inside it.

The answer is the content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or the `\\boxed x`
short form) in the final region; without one, the last "answer is X" / "Answer: X" phrase; else none.
For a parallel response the final region is the text after the last `</takeaway>`. Never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAKEAWAY_CLOSE = "</takeaway>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# "the final answer is X", "answer: X", "Answer is: X" -- X runs to the end of its line.
_ANSWER_PHRASE_RE = re.compile(r"answer\s*(?:is|:)\s*:?\s*(?P<answer>[^\n]+)", re.IGNORECASE)
_MAX_PHRASE_CHARS = 200  # a "phrase answer" longer than this is prose, not an answer


@dataclass(frozen=True)
class Answer:
    """An extracted answer: its `text` (None when there is none) and where it came from.

    source: "boxed" | "phrase" | "none". `is_empty` is True for `\\boxed{}` with blank content.
    """

    text: str | None
    source: str

    @property
    def is_empty(self) -> bool:
        return self.text is not None and not self.text.strip()


NO_ANSWER = Answer(None, "none")


def final_region(text: str) -> str:
    """The part of `text` that carries the final answer: after the last `</takeaway>`, else all of it."""
    cut = text.rfind(TAKEAWAY_CLOSE)
    return text if cut < 0 else text[cut + len(TAKEAWAY_CLOSE):]


def match_braces(text: str, open_idx: int) -> int:
    """Index of the `}` closing the `{` at `open_idx`, or -1 when unbalanced. `\\{` and `\\}` do not count."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _box_content(text: str, start: int, command: str) -> str | None:
    """Content of the box command at `start`, or None when it is incomplete (truncated, unbalanced)."""
    i = start + len(command)
    if i < len(text) and (text[i].isalpha()):
        return None  # a longer command name, e.g. \boxedminus
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        close = match_braces(text, i)
        return None if close < 0 else text[i + 1:close]
    # \boxed x: the short form takes one token, up to whitespace or the end of inline math.
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0).rstrip(".,;") if m else None


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed x` in `text`, or None."""
    candidates = []
    for command in _BOX_COMMANDS:
        pos = text.rfind(command)
        while pos >= 0:
            candidates.append((pos, command))
            pos = text.rfind(command, 0, pos)
    for pos, command in sorted(candidates, reverse=True):
        content = _box_content(text, pos, command)
        if content is not None:
            return content
    return None


def has_box_command(text: str) -> bool:
    return any(command in text for command in _BOX_COMMANDS)


def last_answer_phrase(text: str) -> str | None:
    """The X of the last "answer is X" / "answer: X" in `text`, cleaned of `$` and a trailing period."""
    found = None
    for m in _ANSWER_PHRASE_RE.finditer(text):
        found = m.group("answer")
    if found is None:
        return None
    found = re.sub(r"[\s.$]+$", "", found.strip().lstrip("$").strip())
    if not found or len(found) > _MAX_PHRASE_CHARS:
        return None
    return found


def extract_answer(text: str, *, use_fallback: bool = True) -> Answer:
    """The final answer of a response: last boxed in the final region, else (if `use_fallback`) the
    last answer phrase there. Returns `NO_ANSWER` when neither exists. Never raises."""
    if not isinstance(text, str) or not text:
        return NO_ANSWER
    region = final_region(text)
    boxed = last_boxed(region)
    if boxed is not None:
        return Answer(boxed.strip(), "boxed")
    if use_fallback:
        phrase = last_answer_phrase(region)
        if phrase is not None:
            return Answer(phrase, "phrase")
    return NO_ANSWER
