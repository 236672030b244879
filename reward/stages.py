"""Stage rewards and the verl entry point `compute_score` (DESIGN §6).

Stage 1 (NPR-Zero, "zero"): +1/-1 accuracy when the format is perfect; otherwise -1 + format score,
in [-2, -1), so an invalid response always scores below any valid one. Stage 3 (PAPO, "papo"): +1/-1
accuracy; validity is reported (`is_valid`) for the trainer to filter. Every result has the same keys,
all scalars (verl stacks each key into a numpy array). Never raises on any text, never hangs.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from npr.schema import DEFAULT_MAX_BRANCHES
from reward.extract import extract_answer
from reward.format import check_format
from reward.grade import grade_answer
from reward.verify import timeout_from_env

logger = logging.getLogger(__name__)

STAGE_ALIASES = {
    "zero": "zero", "npr_zero": "zero", "stage1": "zero", "1": "zero",
    "papo": "papo", "npr_rl": "papo", "npr": "papo", "stage3": "papo", "3": "papo",
}
DEFAULT_STAGE = "zero"  # forgetting the stage in Stage 1 would silently drop the format reward
RESULT_KEYS = ("score", "accuracy", "acc", "format_score", "is_valid", "violations", "num_violations",
               "num_blocks", "max_width", "has_answer", "answer_source", "pred", "verify_status")


def resolve_stage(stage: Any = None) -> str:
    """Canonical stage name ("zero" | "papo") from an alias, else NPR_REWARD_STAGE, else "zero".

    Raises ValueError naming the valid aliases for an unknown stage.
    """
    if stage is None:
        stage = os.environ.get("NPR_REWARD_STAGE") or DEFAULT_STAGE
    key = str(stage).strip().lower()
    if key not in STAGE_ALIASES:
        raise ValueError(f"unknown reward stage {stage!r}; expected one of {sorted(STAGE_ALIASES)} "
                         "(set it with reward_kwargs stage=... or NPR_REWARD_STAGE)")
    return STAGE_ALIASES[key]


def stage_reward(solution_str: Any, ground_truth: Any, *, stage: Any = None,
                 extra_info: Mapping[str, Any] | None = None, timeout_s: float | None = None,
                 max_branches: int = DEFAULT_MAX_BRANCHES) -> dict[str, Any]:
    """The reward of one response for a stage, with the named extras of `RESULT_KEYS`.

    Raises ValueError only for bad settings (stage, timeout), never because of the text.
    """
    stage = resolve_stage(stage)
    timeout_s = timeout_from_env(timeout_s)
    if not isinstance(max_branches, int) or max_branches < 1:
        raise ValueError(f"max_branches must be an int >= 1, got {max_branches!r}")
    try:
        text = _as_text(solution_str)
        report = check_format(text, max_branches)
        grading = grade_answer(extract_answer(text), ground_truth, extra_info=_mapping(extra_info),
                               timeout_s=timeout_s)
    except Exception:  # noqa: BLE001 - a reward must not take down a rollout; logged loudly
        logger.exception("reward: unexpected error while scoring a response; scoring it as the worst")
        return _worst(stage)
    accuracy = 1.0 if grading.is_correct else -1.0
    if stage == "zero" and not report.is_valid:
        score = -1.0 + report.score  # report.score < 0 here, so score is in [-2, -1)
    else:
        score = accuracy
    return {
        "score": float(score),
        "accuracy": 1.0 if grading.is_correct else 0.0,
        "acc": 1.0 if grading.is_correct else 0.0,  # the name verl's DAPO group filter reads by default
        "format_score": float(report.score),
        "is_valid": report.is_valid,
        "violations": ",".join(report.violations),
        "num_violations": len(report.violations),
        "num_blocks": report.num_blocks,
        "max_width": report.max_width,
        "has_answer": grading.answer.text is not None and not grading.answer.is_empty,
        "answer_source": grading.answer.source,
        "pred": grading.answer.text or "",  # verl's validation metrics take majority votes over "pred"
        "verify_status": grading.status,
    }


def compute_score(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None,
                  *, stage: Any = None, timeout_s: float | None = None,
                  max_branches: int = DEFAULT_MAX_BRANCHES, **kwargs: Any) -> dict[str, Any]:
    """verl's reward-function signature (`reward.custom_reward_function.path: pkg://reward`). Returns a
    dict with "score" and the extras of `RESULT_KEYS`. `data_source` is accepted for the signature;
    extra verl kwargs (reward_router_address, ...) are ignored. Stage from `stage`, else NPR_REWARD_STAGE,
    else "zero" (set `reward_kwargs: {stage: papo}` for Stage 3)."""
    return stage_reward(solution_str, ground_truth, stage=stage, extra_info=extra_info,
                        timeout_s=timeout_s, max_branches=max_branches)


def compute_score_zero(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None,
                       **kwargs: Any) -> dict[str, Any]:
    """`compute_score` with the Stage-1 (NPR-Zero) reward."""
    kwargs.pop("stage", None)
    return compute_score(data_source, solution_str, ground_truth, extra_info, stage="zero", **kwargs)


def compute_score_papo(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None,
                       **kwargs: Any) -> dict[str, Any]:
    """`compute_score` with the Stage-3 (PAPO) reward."""
    kwargs.pop("stage", None)
    return compute_score(data_source, solution_str, ground_truth, extra_info, stage="papo", **kwargs)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _mapping(extra_info: Any) -> Mapping[str, Any] | None:
    return extra_info if isinstance(extra_info, Mapping) else None


def _worst(stage: str) -> dict[str, Any]:
    return {
        "score": -2.0 if stage == "zero" else -1.0, "accuracy": 0.0, "acc": 0.0, "format_score": -1.0,
        "is_valid": False, "violations": "internal_error", "num_violations": 1, "num_blocks": 0,
        "max_width": 0, "has_answer": False, "answer_source": "none", "pred": "", "verify_status": "error",
    }
