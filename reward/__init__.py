"""Rewards for NPR: answer extraction and correctness, the format score, and the stage rewards verl calls.

Importing this package starts nothing and never imports verl; verification workers start on first use.
"""

from reward.extract import Answer, extract_answer, final_region, last_boxed
from reward.format import VIOLATION_WEIGHTS, FormatReport, check_format, format_score
from reward.grade import Grading, grade, grade_answer
from reward.stages import RESULT_KEYS, compute_score, compute_score_papo, compute_score_zero, stage_reward
from reward.verify import Verdict, verify_equivalent

__all__ = [
    "Answer", "FormatReport", "Grading", "RESULT_KEYS", "VIOLATION_WEIGHTS", "Verdict",
    "check_format", "compute_score", "compute_score_papo", "compute_score_zero", "extract_answer",
    "final_region", "format_score", "grade", "grade_answer", "last_boxed", "stage_reward",
    "verify_equivalent",
]
