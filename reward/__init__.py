"""Rewards for NPR: answer extraction and correctness, the format score, and the stage rewards verl calls.

Importing this package starts nothing and never imports verl; verification workers start on first use.
"""

from reward.extract import Answer, extract_answer, final_region, last_boxed
from reward.grade import Grading, grade, grade_answer
from reward.verify import Verdict, verify_equivalent

__all__ = [
    "Answer", "Grading", "Verdict", "extract_answer", "final_region", "grade", "grade_answer", "last_boxed",
    "verify_equivalent",
]
