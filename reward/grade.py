"""Answer correctness: the extracted answer against a reference, by letter for multiple choice, by
normalised text for word answers, else by math-verify (time-bounded, in worker processes)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from reward.choice import grade_choice, normalize_text, parse_choice_reference
from reward.extract import Answer, extract_answer, strip_trailing
from reward.verify import timeout_from_env, verify_equivalent

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z\s\-']*[A-Za-z]")
_TEXT_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}$")
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_INTEGER_RE = re.compile(r"-?\d+")
# Word references that math-verify itself reads as math (it parses "infinity" as oo, so "\\infty" matches):
# graded as text first, then as this LaTeX. math-verify is the reference for such decisions; it does not
# read "√2" (text) or "1.5e3" (1.5*e*3) as numbers, so neither do we (see tests/reward/test_grade.py).
MATH_WORDS = {"infinity": "\\infty"}


@dataclass(frozen=True)
class Grading:
    """A graded answer: `is_correct`, the extracted `answer`, the `method` used
    ("choice" | "text" | "math" | "none") and `status` ("ok" | "timeout" | "error")."""

    is_correct: bool
    answer: Answer
    method: str
    status: str = "ok"


def references_of(reference: Any) -> list[str]:
    """The acceptable answers: a string, a number, or a list/tuple/array of them. Non-finite numbers are dropped."""
    if reference is None:
        return []
    if hasattr(reference, "tolist") and not isinstance(reference, str):
        reference = reference.tolist()
    if isinstance(reference, (list, tuple)):
        return [r for item in reference for r in references_of(item)]
    if isinstance(reference, bool):
        return [str(reference)]
    if isinstance(reference, int):
        return [str(reference)]
    if isinstance(reference, float):
        return [float_text(reference)] if math.isfinite(reference) else []
    if isinstance(reference, bytes):
        reference = reference.decode("utf-8", "replace")
    text = str(reference).strip()
    return [text] if text else []


def float_text(value: float) -> str:
    """A finite float as a model writes it: positional, never scientific (`repr(1e-05)` is "1e-05", which
    matches no answer), and integral values without ".0": 1e-05 -> "0.00001", 1e16 -> "10000000000000000"."""
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")  # repr: the shortest text that round-trips


def clean_math(text: str) -> str:
    """An answer ready for `$...$` wrapping: no unescaped `$`, no trailing period, no outer `\\text{}`."""
    return strip_trailing(_UNESCAPED_DOLLAR_RE.sub("", text).strip(), ".")


def strip_percent(text: str) -> str | None:
    """`text` without a trailing percent sign (`50\\%`, `50 %`), or None when it has none."""
    text = text.rstrip()
    if not text.endswith("%"):
        return None
    text = text[:-1]
    return (text[:-1] if text.endswith("\\") else text).rstrip()


def is_word_answer(reference: str) -> bool:
    """A reference made of words ("True", "Monday", "not valid"): graded by text, since math parsing of
    words multiplies letters ("ab" == "ba")."""
    m = _TEXT_WRAPPER_RE.match(reference.strip())
    return bool(_WORD_RE.fullmatch((m.group(1) if m else reference).strip()))


def math_pairs(gold: str, pred: str) -> list[tuple[str, str]]:
    """(gold, pred) candidates for math-verify; a percent on one side also tries the fraction of 100."""
    gold, pred = clean_math(gold), clean_math(pred)
    pairs = [(gold, pred)]
    gold_pct, pred_pct = strip_percent(gold), strip_percent(pred)
    if gold_pct is not None and pred_pct is None:
        pairs.append(("\\frac{" + gold_pct + "}{100}", pred))
    elif pred_pct is not None and gold_pct is None:
        pairs.append((gold, "\\frac{" + pred_pct + "}{100}"))
    return pairs


def fast_verdict(gold: str, pred: str) -> bool | None:
    """The verdict without math-verify where it is certain: identical text, or two plain integers.
    None means "ask math-verify"."""
    gold, pred = "".join(clean_math(gold).split()), "".join(clean_math(pred).split())
    if gold == pred and gold:
        return True
    if _INTEGER_RE.fullmatch(gold) and _INTEGER_RE.fullmatch(pred) and len(gold) < 100 and len(pred) < 100:
        return int(gold) == int(pred)
    return None


def grade_answer(answer: Answer, reference: Any, *, extra_info: Mapping[str, Any] | None = None,
                 timeout_s: float | None = None) -> Grading:
    """Grade an extracted answer against a reference (or a list of acceptable ones). Never raises on
    any answer or reference; a bad timeout setting raises ValueError, whatever the answer."""
    timeout_s = timeout_from_env(timeout_s)
    references = references_of(reference)
    if answer.text is None or answer.is_empty or not references:
        return Grading(False, answer, "none")
    said = answer.text
    status, method = "ok", "none"
    for ref in references:
        choice = parse_choice_reference(ref, extra_info)
        if choice is not None:
            method = "choice"
            if grade_choice(said, choice):
                return Grading(True, answer, method)
            continue
        if is_word_answer(ref):
            method = "text"
            if normalize_text(said) == normalize_text(ref):
                return Grading(True, answer, method)
            ref = MATH_WORDS.get(normalize_text(ref))
            if ref is None:
                continue
        method = "math"
        fast = fast_verdict(ref, said)
        if fast is not None:
            if fast:
                return Grading(True, answer, method)
            continue
        verdict = verify_equivalent(math_pairs(ref, said), timeout_s)
        if verdict.ok:
            return Grading(True, answer, method)
        if verdict.status != "ok":
            status = verdict.status
    return Grading(False, answer, method, status)


def grade(response_text: str, reference: Any, *, extra_info: Mapping[str, Any] | None = None,
          timeout_s: float | None = None) -> bool:
    """True when the response's final answer (last `\\boxed{}` after the last `</takeaway>`, see
    `reward.extract`) matches `reference`. Never raises on any text; never takes longer than the
    verification timeout (`timeout_s`, else NPR_REWARD_TIMEOUT_S, else 5 s) once workers are up."""
    if not isinstance(response_text, str):
        response_text = "" if response_text is None else str(response_text)
    return grade_answer(extract_answer(response_text), reference, extra_info=extra_info,
                        timeout_s=timeout_s).is_correct
