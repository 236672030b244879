"""Answer extraction: the region holding the final answer, and the answer inside it.

The answer is the content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or the `\\boxed x`
short form) in the final region; without one, the last "answer is X" / "Answer: X" phrase; else none.
The final region is `npr.text.final_region`: the text after the response's last block (empty when
it ends inside a block). Never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from npr.text import final_region  # noqa: F401  (re-exported: the one definition)

# "the final answer is X", "answer: X", "Answer is: X" -- X runs to the end of its line.
# One \s* per gap (never two adjacent), so a long blank run cannot make the search quadratic.
_ANSWER_PHRASE_RE = re.compile(r"answer\s*(?:is|:)(?:\s*:)?\s*(?P<answer>\S[^\n]*)", re.IGNORECASE)
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


_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character (\{, \}, \\) is skipped whole
_SHORT_FORM_RE = re.compile(r"[^\s$]+")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![^\W\d_])[ \t]*")  # not \boxedminus


def match_all_braces(text: str) -> dict[int, int]:
    """Index of each `{` -> index of the `}` closing it, for every balanced group of `text`, in one pass
    (linear: extraction runs on every degenerate rollout). `\\{` and `\\}` do not count."""
    closing: dict[int, int] = {}
    open_stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        ch = m.group()
        if ch == "{":
            open_stack.append(m.start())
        elif ch == "}" and open_stack:
            closing[open_stack.pop()] = m.start()
    return closing


def strip_trailing(text: str, chars: str) -> str:
    """`text` without its trailing run of whitespace and `chars`. Linear, unlike `re.sub(r"[...]+$")`,
    which rescans the run from each of its positions when the run is not at the end."""
    end = len(text)
    while end and (text[end - 1] in chars or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed x` in `text`, or None.
    Linear in `len(text)`: braces are matched once for the whole text."""
    boxes = list(_BOX_RE.finditer(text))
    closing = match_all_braces(text) if boxes else {}
    for box in reversed(boxes):
        i = box.end()
        if i >= len(text):
            continue
        if text[i] == "{":
            if i in closing:
                return text[i + 1:closing[i]]
            continue
        # \boxed x: the short form takes one token, up to whitespace or the end of inline math.
        m = _SHORT_FORM_RE.match(text, i)
        if m:
            return m.group(0).rstrip(".,;")
    return None


def last_answer_phrase(text: str) -> str | None:
    """The X of the last "answer is X" / "answer: X" in `text`, cleaned of `$` and a trailing period."""
    found = None
    for m in _ANSWER_PHRASE_RE.finditer(text):
        found = m.group("answer")
    if found is None:
        return None
    found = strip_trailing(found.strip().lstrip("$").strip(), ".$")
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
