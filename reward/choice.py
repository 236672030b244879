"""Multiple-choice grading (GPQA, MMLU-Pro, ZebraLogic, BBEH style): by letter, or by option text.

A reference is multiple-choice when it is one capital letter, optionally in parentheses and
optionally followed by the option text: "B", "(B)", "B.", "B) 42 m/s", "(C): Paris".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_REFERENCE_RE = re.compile(r"^\(?(?P<letter>[A-Z])\)?(?:\s*[.:)]\s*(?P<text>.*?))?\s*$", re.DOTALL)
# Wrappers a model puts around a letter: \text{B}, \textbf{(B)}, \mathrm{B}, \mbox{B}.
_WRAPPER_OPEN_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{|[{}]")
_LONE_LETTER_RE = re.compile(r"^(?:option|choice|answer)?\s*[:\s]?\s*[\(\[]?(?P<letter>[A-Za-z])[\)\]]?\s*\.?$",
                             re.IGNORECASE)
_LEADING_LETTER_RE = re.compile(r"^(?:option|choice)?\s*[\(\[]?(?P<letter>[A-Z])(?:[\)\]]\s*|\s*[.:)]\s+|\s*[.:)]$)")
# After a leading letter, another option named: "(A) or (B)", "A) and C)", "(A), (C)", "(A)/(B)".
_ANOTHER_LETTER_RE = re.compile(r"^(?:or|and|[,;/&])\s*[\(\[]?(?P<letter>[A-Z])(?![A-Za-z])|[\(\[](?P<paren>[A-Z])[\)\]]")


@dataclass(frozen=True)
class ChoiceReference:
    """A multiple-choice reference: the correct `letter` and, when known, the option `text`s."""

    letter: str
    text: str | None = None
    options: Mapping[str, str] | None = None  # letter -> option text, from extra_info


def parse_choice_reference(reference: Any, extra_info: Mapping[str, Any] | None = None) -> ChoiceReference | None:
    """A ChoiceReference when `reference` is a multiple-choice answer, else None."""
    if not isinstance(reference, str):
        return None
    m = _REFERENCE_RE.match(reference.strip())
    if m is None:
        return None
    text = (m.group("text") or "").strip() or None
    return ChoiceReference(m.group("letter"), text, _options_from(extra_info))


def _options_from(extra_info: Mapping[str, Any] | None) -> Mapping[str, str] | None:
    """Option texts from extra_info["options"|"choices"]: a list (A, B, ... in order) or a dict."""
    if not isinstance(extra_info, Mapping):
        return None
    raw = extra_info.get("options", extra_info.get("choices"))
    if isinstance(raw, Mapping):
        return {str(k).strip("() ").upper(): str(v) for k, v in raw.items()}
    if hasattr(raw, "tolist") or (isinstance(raw, Sequence) and not isinstance(raw, (str, bytes))):
        items = raw.tolist() if hasattr(raw, "tolist") else list(raw)
        return {letter: str(v) for letter, v in zip(_LETTERS, items)}
    return None


def normalize_text(text: str) -> str:
    """Case-folded option text without LaTeX text wrappers, `$`, punctuation runs and extra spaces."""
    text = _unwrap(text).replace("$", "")
    text = re.sub(r"[^\w\s]+", " ", text.casefold())
    return " ".join(text.split())


def _unwrap(text: str) -> str:
    """`text` with every wrapper whose content (once its own wrappers are gone) has no brace replaced by
    that content: `\\textbf{\\text{B}}` -> `B`. One pass with a stack: linear in any nesting depth."""
    stack: list[tuple[str, list[str]]] = [("", [])]  # (opener, pieces) of each open group
    pos = 0
    for m in _WRAPPER_OPEN_RE.finditer(text):
        stack[-1][1].append(text[pos:m.start()])
        pos = m.end()
        if m.group() != "}":
            stack.append((m.group(), []))
        elif len(stack) == 1:
            stack[0][1].append("}")  # a brace closing nothing stays as text
        else:
            opener, pieces = stack.pop()
            content = "".join(pieces)
            is_unwrapped = opener != "{" and "{" not in content and "}" not in content
            stack[-1][1].append(content if is_unwrapped else opener + content + "}")
    stack[-1][1].append(text[pos:])
    while len(stack) > 1:  # groups never closed stay as written
        opener, pieces = stack.pop()
        stack[-1][1].append(opener + "".join(pieces))
    return "".join(stack[0][1]).strip()


def predicted_letter(answer: str) -> str | None:
    """The option letter an answer names: "B", "(b)", "\\text{B}", "B. Paris", "Option C"; else None."""
    text = _unwrap(answer).replace("$", "").strip()
    m = _LONE_LETTER_RE.match(text)
    if m:
        return m.group("letter").upper()
    m = _LEADING_LETTER_RE.match(text)
    if m is None or _names_another_letter(text[m.end():], m.group("letter")):
        return None
    return m.group("letter")


def _names_another_letter(rest: str, letter: str) -> bool:
    """Whether the text after a leading option letter names a different option too (a hedge such as
    "(A) or (B) or (C)", which must not get credit for whichever letter comes first)."""
    for m in _ANOTHER_LETTER_RE.finditer(rest.strip()):
        other = m.group("letter") or m.group("paren")
        if other != letter:
            return True
    return False


def grade_choice(answer: str, reference: ChoiceReference) -> bool:
    """True when the answer names the reference's letter, or (naming no letter) matches its option text.
    An answer naming several options ("(A) or (B)") names none and matches no option text: False."""
    letter = predicted_letter(answer)
    if letter is not None:
        return letter == reference.letter
    said = normalize_text(answer)
    if not said:
        return False
    texts = [reference.text] if reference.text else []
    if reference.options and reference.letter in reference.options:
        texts.append(reference.options[reference.letter])
    return any(said == normalize_text(t) for t in texts if t)
