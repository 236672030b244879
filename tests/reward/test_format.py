"""Format score over the parallel schema: the table of trajectories in tests/data, and the weights."""

import json
from pathlib import Path

import pytest

from npr.schema import ISSUE_NAMES
from reward import VIOLATION_WEIGHTS, check_format, format_score
from reward.format import penalty_of

TABLE = json.loads((Path(__file__).parents[1] / "data" / "reward_format_cases.json").read_text())
CASES = TABLE["cases"]


def _text(case):
    return "\n".join(case["lines"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_format_table(case):
    score, violations = format_score(_text(case), case.get("max_branches", 5))
    assert violations == case["violations"]
    assert score == pytest.approx(case["score"], abs=1e-9)


def test_table_has_perfect_every_single_violation_and_combinations():
    singles = {c["violations"][0] for c in CASES if len(c["violations"]) == 1}
    assert any(c["violations"] == [] for c in CASES)
    reachable = set(VIOLATION_WEIGHTS) - {"fork_refused"}  # token level only
    # unclosed_block / unclosed_takeaway always come with missing_boxed (the answer is cut off)
    assert reachable - singles == {"unclosed_block", "unclosed_takeaway"}
    assert sum(len(c["violations"]) >= 2 for c in CASES) >= 5


def test_every_schema_issue_has_a_weight():
    assert set(ISSUE_NAMES) <= set(VIOLATION_WEIGHTS)
    assert all(0 < w <= 1 for w in VIOLATION_WEIGHTS.values())


def test_penalty_grows_with_violations_and_is_floored():
    names = list(VIOLATION_WEIGHTS)
    for i in range(1, len(names)):
        assert penalty_of(names[:i + 1]) <= penalty_of(names[:i])
    assert penalty_of(names) == -1.0
    assert penalty_of([]) == 0.0
    assert penalty_of(["empty_step", "empty_step"]) == penalty_of(["empty_step"])  # names count once


def test_report_structure():
    case = next(c for c in CASES if c["name"] == "perfect_five_plans")
    report = check_format(_text(case))
    assert (report.is_valid, report.num_blocks, report.max_width) == (True, 1, 5)
    report = check_format("no blocks")
    assert (report.num_blocks, report.max_width) == (0, 0) and not report.is_valid


def test_stage1_text_and_special_token_text_score_alike():
    # The reward sees decoded text with tags kept, whether the tags were one token or many.
    case = next(c for c in CASES if c["name"] == "perfect")
    assert format_score(_text(case)) == format_score(_text(case).replace("\n", ""))


@pytest.mark.parametrize("value", [None, 12, b"bytes", ""])
def test_non_text_never_raises(value):
    score, violations = format_score(value)
    assert -1.0 <= score < 0 and "no_block" in violations
