"""Helpers (not a test module) for the `npr sample` runs through each engine: a prepared problem file, a
grader whose verdicts depend on the whole text (so the kept set says whether two engines wrote the same
trials: the tiny random model never writes a correct answer for reward's grader), the command line,
and the kept records of a finished run."""

from __future__ import annotations

import json
import zlib

SCRIPT = "2,3"
GRADER = "tests.sample_runs:TEXT_GRADER"


class TextGrader:
    """grade: crc32 of the text is even; format: perfect unless crc32 % 3 == 0. extract_answer: reward's."""

    @staticmethod
    def grade(text, reference, *, extra_info=None) -> bool:
        return zlib.crc32(text.encode("utf-8")) % 2 == 0

    @staticmethod
    def format_score(text, max_branches=5):
        return (-1.0, ["text_rule"]) if zlib.crc32(text.encode("utf-8")) % 3 == 0 else (0.0, [])

    @staticmethod
    def extract_answer(text):
        from reward import extract_answer

        return extract_answer(text)


TEXT_GRADER = TextGrader()


def write_problems(path, num_problems: int) -> str:
    from npr.data import convert, write_parquet

    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(num_problems)]
    write_parquet(convert(rows, "toy", instruction=None).rows, path)
    return str(path)


def sample_argv(data: str, model: str, out, engine: str = "reference", *, num_trials: int = 3,
                concurrency: int = 4, extra=()) -> list[str]:
    """`npr sample` on the tiny model: sampled (temperature 1, seed 0) under a script, the text grader."""
    return ["sample", "--data", data, "--model", model, "--out", str(out), "--engine", engine,
            "--num-trials", str(num_trials), "--concurrency", str(concurrency), "--script", SCRIPT,
            "--max-new-tokens", "48", "--temperature", "1.0", "--device", "cpu", "--dtype", "float32",
            "--grader", GRADER, "--quiet", *extra]


def kept_records(out) -> dict:
    """(problem_id, trial) -> text of every kept trial, and the SFT rows' (problem_id, trial, response_ids)."""
    import pandas as pd

    from npr.rejection import read_records

    records, _ = read_records(str(out / "records.jsonl"))
    kept = {(pid, j): t["text"] for pid, r in records.items() for j, t in zip(r["trial_ids"], r["trials"])
            if t["is_kept"]}
    sft = pd.read_parquet(out / "sft.parquet")
    rows = sorted((r.problem_id, int(r.trial), tuple(r.response_ids)) for r in sft.itertuples())
    return {"kept": kept, "sft": rows}


def trial_keys(path) -> list[tuple[str, int]]:
    """(problem_id, trial) of every whole line of a records file, in file order."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            out.append((record["problem_id"], int(record["trial"])))
    return out
