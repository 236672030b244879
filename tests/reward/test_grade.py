"""Answer extraction and correctness: the table of answer pairs in tests/data, and the extraction rules."""

import json
from pathlib import Path

import pytest

from reward import extract_answer, final_region, grade, last_boxed
from reward.choice import parse_choice_reference, predicted_letter
from reward.grade import fast_verdict, grade_answer, math_pairs, references_of

TABLE = Path(__file__).parents[1] / "data" / "reward_answers.jsonl"
ROWS = [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()]


def _response(row):
    return row["response"] if "response" in row else "We find \\boxed{" + row["answer"] + "}."


def test_table_covers_every_category_with_both_verdicts():
    assert len(ROWS) >= 60
    categories = {r["category"] for r in ROWS}
    assert {"number", "fraction", "expression", "set", "interval", "equation", "unit", "percent",
            "choice", "text", "extraction"} <= categories
    for category in categories - {"text"}:
        verdicts = {r["expected"] for r in ROWS if r["category"] == category}
        assert verdicts == {True, False}, category


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['category']}:{r.get('answer', r.get('note'))}" for r in ROWS])
def test_answer_table(row):
    assert grade(_response(row), row["reference"], extra_info=row.get("extra_info")) is row["expected"]


@pytest.mark.parametrize("text, content", [
    ("\\boxed{42}", "42"),
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("\\boxed{{a}{b}}", "{a}{b}"),
    ("$\\boxed 7$.", "7"),
    ("\\boxed   x.", "x"),
    ("\\fbox{3}", "3"),
    ("\\boxed{5} then \\boxed{6", "5"),  # an unbalanced last box is skipped
    ("\\boxed{", None),
    ("\\boxedminus{3}", None),
    ("no box", None),
    ("\\boxed{}", ""),
])
def test_last_boxed(text, content):
    assert last_boxed(text) == content


def test_final_region_is_after_the_last_takeaway():
    text = "<takeaway>a</takeaway> b <takeaway>c</takeaway> final"
    assert final_region(text) == " final"
    assert final_region("no blocks") == "no blocks"


def test_extract_answer_sources():
    assert extract_answer("\\boxed{3}").source == "boxed"
    phrase = extract_answer("Hence the final answer is: $\\frac{1}{2}$.")
    assert (phrase.text, phrase.source) == ("\\frac{1}{2}", "phrase")
    assert extract_answer("Answer: (B)").text == "(B)"
    assert extract_answer("nothing here").source == "none"
    assert extract_answer("So \\boxed{}.").is_empty
    assert extract_answer("the answer is 5", use_fallback=False).source == "none"
    # A parallel response: the box inside a takeaway is not the final answer.
    assert extract_answer("<takeaway>\\boxed{1}</takeaway> so 2").source == "none"


def test_fallback_phrase_is_graded():
    assert grade("Therefore, the answer is 12.", "12")
    assert not grade("The answer is not 12 but I am unsure", "12")


@pytest.mark.parametrize("reference, letter, text", [
    ("B", "B", None), ("(C)", "C", None), ("D.", "D", None), ("B) 42 m/s", "B", "42 m/s"),
    ("(A): Paris", "A", "Paris"),
])
def test_choice_references(reference, letter, text):
    choice = parse_choice_reference(reference)
    assert (choice.letter, choice.text) == (letter, text)


@pytest.mark.parametrize("reference", ["42", "x", "b", "(1,2)", "AB", "\\frac{1}{2}", "True"])
def test_non_choice_references(reference):
    assert parse_choice_reference(reference) is None


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("(b)", "B"), ("\\text{(C)}", "C"), ("\\textbf{\\text{D}}", "D"), ("E. five", "E"),
    ("Option F", "F"), ("$G$", "G"), ("42", None), ("Paris", None), ("A cat", None),
])
def test_predicted_letter(answer, letter):
    assert predicted_letter(answer) == letter


def test_choices_from_extra_info_dict_and_list():
    assert grade("\\boxed{Rome}", "C", extra_info={"choices": ["Paris", "London", "Rome"]})
    assert grade("\\boxed{Rome}", "C", extra_info={"options": {"A": "Paris", "C": "Rome"}})
    assert not grade("\\boxed{Rome}", "A", extra_info={"options": {"A": "Paris", "C": "Rome"}})


@pytest.mark.parametrize("reference, expected", [
    ("5", ["5"]), (5, ["5"]), (2.5, ["2.5"]), (float("nan"), []), (None, []), ("  ", []),
    (["1", 2], ["1", "2"]), (b"7", ["7"]), (True, ["True"]),
])
def test_references_of(reference, expected):
    assert references_of(reference) == expected


def test_numeric_and_listed_references():
    assert grade("\\boxed{5}", 5)
    assert grade("\\boxed{2.5}", 2.5)
    assert grade("\\boxed{7}", ["6", "7"])
    assert not grade("\\boxed{7}", [])
    assert not grade("\\boxed{7}", None)


def test_percent_pairs():
    assert math_pairs("50\\%", "0.5") == [("50\\%", "0.5"), ("\\frac{50}{100}", "0.5")]
    assert math_pairs("$3$.", "3") == [("3", "3")]


def test_grading_reports_method_and_status():
    graded = grade_answer(extract_answer("\\boxed{B}"), "B")
    assert (graded.is_correct, graded.method, graded.status) == (True, "choice", "ok")
    graded = grade_answer(extract_answer("\\boxed{7}"), "8")
    assert (graded.is_correct, graded.method, graded.status) == (False, "math", "ok")
    assert grade_answer(extract_answer("none"), "8").method == "none"


def test_non_string_response_is_graded_not_raised():
    assert grade(None, "1") is False
    assert grade(12345, "1") is False


@pytest.mark.parametrize("gold, pred, verdict", [
    ("42", "42", True), ("42", " 42 ", True), ("$42$", "42.", True), ("-7", "-7", True), ("042", "42", True),
    ("42", "41", False), ("\\frac{1}{2}", "\\frac{1}{2}", True), ("42", "42.0", None), ("1000", "1,000", None),
    ("\\frac{1}{2}", "0.5", None), ("", "", None),
])
def test_fast_verdict_is_certain_or_abstains(gold, pred, verdict):
    assert fast_verdict(gold, pred) is verdict


@pytest.mark.parametrize("answer, reference", [
    ("0.00001", 1e-05), ("10000000000000000", 1e16), ("100000000000000000000", 1e20), ("-0.0000003", -3e-7),
    ("2.5", 2.5), ("3", 3.0),
])
def test_float_references_are_written_positionally(answer, reference):
    assert "e" not in references_of(reference)[0]  # repr(1e-05) == "1e-05" matched no answer
    assert grade("\\boxed{" + answer + "}", reference)


@pytest.mark.parametrize("answer", ["(A) or (B) or (C) or (D)", "(A) or (B)", "A) or B)", "(A), (C)", "(A)/(B)",
                                    "(A) and C", "\\text{(A) or (B)}", "(A) (B)"])
def test_a_hedged_choice_gets_no_credit(answer):
    assert predicted_letter(answer) is None
    assert not grade("\\boxed{" + answer + "}", "A")
    assert not grade("\\boxed{" + answer + "}", "(A) Paris", extra_info={"options": ["Paris", "Rome"]})


@pytest.mark.parametrize("answer", ["(A)", "A", "(A) Paris", "A. Paris", "\\textbf{(A)}", "(A) a car (A)"])
def test_one_choice_still_gets_credit(answer):
    assert grade("\\boxed{" + answer + "}", "A")


@pytest.mark.parametrize("answer, reference, expected", [
    # math-verify reads "infinity" as oo, so it is \infty in either direction, and by text as a word.
    ("\\infty", "infinity", True), ("infinity", "\\infty", True), ("Infinity", "infinity", True),
    ("-\\infty", "-infinity", True), ("\\infty", "-infinity", False),
    # math-verify reads "√2" as a string and "1.5e3" as 1.5*e*3: we follow it (a model trained on LaTeX
    # answers writes \sqrt{2} and 1500; accepting more here would grade differently from math-verify).
    ("√2", "\\sqrt{2}", False), ("1.5e3", "1500", False),
])
def test_math_words_follow_math_verify(answer, reference, expected):
    from math_verify import parse, verify

    if reference != "infinity" and answer != "Infinity":  # a word reference is graded as text first
        assert verify(parse("$" + reference + "$"), parse("$" + answer + "$")) is expected
    assert grade("\\boxed{" + answer + "}", reference) is expected
