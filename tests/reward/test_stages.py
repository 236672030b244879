"""Stage rewards (DESIGN §6) and the verl-facing `compute_score`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reward import RESULT_KEYS, compute_score, compute_score_papo, compute_score_zero, stage_reward
from reward.stages import resolve_stage

CASES = json.loads((Path(__file__).parents[1] / "data" / "reward_format_cases.json").read_text())["cases"]
TEXTS = {c["name"]: "\n".join(c["lines"]) for c in CASES}
PERFECT = TEXTS["perfect"]  # its final answer is \boxed{42}


def test_public_names_and_signature():
    import reward

    result = reward.compute_score("openai/gsm8k", PERFECT, "42", None)
    assert isinstance(result, dict) and result["score"] == 1.0
    assert isinstance(reward.grade(PERFECT, "42"), bool)
    assert reward.format_score(PERFECT) == (0.0, [])


def test_importing_reward_leaves_verl_out():
    code = "import sys, reward; reward.format_score('x'); print('verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("stage", ["zero", "papo"])
def test_perfect_trajectory(stage):
    right = compute_score("math", PERFECT, "42", stage=stage)
    wrong = compute_score("math", PERFECT, "41", stage=stage)
    assert (right["score"], wrong["score"]) == (1.0, -1.0)
    assert (right["accuracy"], wrong["accuracy"]) == (1.0, 0.0)
    assert right["is_valid"] and right["violations"] == "" and right["format_score"] == 0.0
    assert (right["num_blocks"], right["max_width"]) == (1, 2)


@pytest.mark.parametrize("case", [c for c in CASES if c["violations"]], ids=lambda c: c["name"])
def test_stage1_invalid_scores_below_every_valid_response(case):
    text = "\n".join(case["lines"])
    kwargs = dict(stage="zero", max_branches=case.get("max_branches", 5))
    result = compute_score("math", text, "42", **kwargs)
    assert -2.0 <= result["score"] < -1.0
    assert result["score"] == pytest.approx(-1.0 + case["score"])
    assert result["violations"] == ",".join(case["violations"])
    assert result["num_violations"] == len(case["violations"]) and not result["is_valid"]
    papo = compute_score("math", text, "42", stage="papo", max_branches=kwargs["max_branches"])
    assert papo["score"] in (1.0, -1.0) and papo["is_valid"] is False
    assert papo["score"] == (1.0 if papo["accuracy"] else -1.0)


def test_stage3_credits_a_correct_answer_even_when_the_format_is_invalid():
    text = TEXTS["text_before_block"]
    result = compute_score("math", text, "42", stage="papo")
    assert result["score"] == 1.0 and not result["is_valid"] and result["violations"] == "text_outside_tags"


def test_results_have_the_same_scalar_keys():
    for text in ["", PERFECT, "garbage <step>", TEXTS["no_block"]]:
        for stage in ("zero", "papo"):
            result = compute_score("x", text, "42", stage=stage)
            assert tuple(result) == RESULT_KEYS
            assert all(isinstance(v, (int, float, str, bool)) for v in result.values())


def test_stage_aliases_env_and_errors(monkeypatch):
    assert resolve_stage("Stage1") == "zero" and resolve_stage(3) == "papo" and resolve_stage("npr_rl") == "papo"
    monkeypatch.delenv("NPR_REWARD_STAGE", raising=False)
    assert resolve_stage() == "zero"
    monkeypatch.setenv("NPR_REWARD_STAGE", "papo")
    assert resolve_stage() == "papo"
    with pytest.raises(ValueError, match="unknown reward stage 'stage2'.*papo"):
        resolve_stage("stage2")
    with pytest.raises(ValueError, match="timeout"):
        stage_reward(PERFECT, "42", timeout_s=0)
    with pytest.raises(ValueError, match="max_branches"):
        stage_reward(PERFECT, "42", max_branches=0)


def test_fixed_stage_functions_and_extra_verl_kwargs():
    wrong = "<guideline><plan>1: a</plan></guideline><step>1: b</step><takeaway></takeaway>\\boxed{42}"
    zero = compute_score_zero("x", wrong, "42", {}, reward_router_address=None, stage="papo")
    papo = compute_score_papo("x", wrong, "42", {"index": 3}, reward_model_tokenizer=None)
    assert zero["score"] == pytest.approx(-1.2) and papo["score"] == 1.0


def test_internal_error_scores_as_the_worst(monkeypatch):
    import reward.stages

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(reward.stages, "check_format", broken)
    result = compute_score("x", PERFECT, "42", stage="zero")
    assert result["score"] == -2.0 and result["violations"] == "internal_error"
    assert tuple(result) == RESULT_KEYS
