"""Problem files -> verl's RL parquet layout (`prompt` as chat messages, `data_source`, `ability`,
`reward_model.ground_truth`, `extra_info`), with our instruction for the parallel schema. Reads the
ORZ collection (a list of [question, ground-truth] pairs), AIME/AMC (`question`, `answer`) and
MATH500 (`problem`, `answer`) JSON/JSONL/parquet, or hub names through `datasets`. Bad rows are
reported with their index and skipped, never silently."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

# Our own instruction for the schema of DESIGN §1 (tags are quoted literally: the model writes them).
PARALLEL_INSTRUCTION = """\
Solve the problem below by reasoning in parallel. Work in one or more blocks; each block has three parts:

<guideline>
<plan>1: a short, self-contained approach</plan>
<plan>2: a different approach</plan>
</guideline>
<step>
1: carry out plan 1 only. Steps are written at the same time and cannot see each other, so never refer to another step.
</step>
<step>
2: carry out plan 2 only.
</step>
<takeaway>
compare what the steps found and decide: start another block, or conclude.
</takeaway>

Give between 1 and 5 plans per guideline and exactly one numbered step per plan, in the same order. \
After the last block write the final answer once, as \\boxed{answer}."""

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "ground_truth", "final_answer", "solution_answer")


class BadRow(ValueError):
    """A source row that cannot be converted; the message says why."""


@dataclass
class Conversion:
    """Converted rows (verl's RL layout) and the skipped ones as (source index, reason)."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"converted {len(self.rows)} rows, skipped {len(self.skipped)}"]
        lines += [f"  row {index}: {reason}" for index, reason in self.skipped]
        return "\n".join(lines)


def make_prompt(question: str, instruction: str | None = PARALLEL_INSTRUCTION) -> list[dict]:
    """Chat messages of one problem: the instruction as the system message (None = no system message)."""
    messages = [{"role": "system", "content": instruction}] if instruction else []
    return messages + [{"role": "user", "content": question}]


def problem_id(data_source: str, question: str) -> str:
    """A stable id of a problem (16 hex digits of SHA-1): the key of resumable sampling records."""
    return hashlib.sha1(f"{data_source}\x00{question}".encode("utf-8")).hexdigest()[:16]


def answer_text(value: Any) -> str:
    """A ground truth as text: 27.0 -> "27", strings stripped. Raises BadRow for empty or non-finite values."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if isinstance(value, bool) or value is None:
        raise BadRow(f"answer {value!r} is not a number or text")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRow(f"answer {value!r} is not finite")
        value = int(value) if value.is_integer() else value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise BadRow(f"answer {value!r} is empty or not text")


def question_and_answer(raw: Any) -> tuple[str, str]:
    """(question, answer) of one source row. ORZ: [{"value": q}, {"ground_truth": {"value": a}}];
    dicts with one of QUESTION_KEYS and one of ANSWER_KEYS. Raises BadRow saying what is missing."""
    if isinstance(raw, (list, tuple)):
        if len(raw) != 2 or not all(isinstance(x, dict) for x in raw):
            raise BadRow(f"an ORZ row is a pair [{{'value': question}}, {{'ground_truth': {{'value': answer}}}}], "
                         f"got {str(raw)[:80]!r}")
        question = raw[0].get("value")
        truth = raw[1].get("ground_truth")
        if not isinstance(truth, dict) or "value" not in truth:
            raise BadRow("ORZ row has no ground_truth.value in its second element")
        answer = truth["value"]
    elif isinstance(raw, dict):
        question = next((raw[k] for k in QUESTION_KEYS if raw.get(k) is not None), None)
        answer = next((raw[k] for k in ANSWER_KEYS if raw.get(k) is not None), None)
        if answer is None:
            raise BadRow(f"no answer field (one of {list(ANSWER_KEYS)}); keys: {sorted(raw)}")
    else:
        raise BadRow(f"expected a dict or an ORZ pair, got {type(raw).__name__}")
    if not isinstance(question, str) or not question.strip():
        raise BadRow(f"question {question!r} is missing or empty (fields tried: {list(QUESTION_KEYS)})")
    return question.strip(), answer_text(answer)


def convert(raw_rows: Iterable[Any], data_source: str, split: str = "train",
            instruction: str | None = PARALLEL_INSTRUCTION, ability: str = "math") -> Conversion:
    """Rows in verl's RL layout, one per good source row (bad ones go to `skipped` with their index)."""
    out = Conversion()
    for index, raw in enumerate(raw_rows):
        try:
            question, answer = question_and_answer(raw)
        except BadRow as err:
            out.skipped.append((index, str(err)))
            continue
        out.rows.append({
            "data_source": data_source,
            "prompt": make_prompt(question, instruction),
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"index": len(out.rows), "source_index": index, "split": split,
                           "problem_id": problem_id(data_source, question), "question": question},
        })
    return out


ROW_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def folder_files(folder: str, suffixes: Sequence[str] = ROW_FILE_SUFFIXES) -> list[str]:
    """The files of `folder` with one of `suffixes`, sorted by name. Raises ValueError when there are none."""
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.endswith(tuple(suffixes)) and os.path.isfile(os.path.join(folder, f)))
    if not files:
        raise ValueError(f"{folder}: the folder holds no {', '.join(suffixes)} file")
    return files


def read_rows(source: str, hub_split: str = "train") -> list[Any]:
    """Raw rows of a local .json (a list), .jsonl or .parquet file, of a folder of them (in file-name
    order), or of a hub dataset name (through `datasets`). Unparseable JSONL lines become None rows
    (reported by `convert`). Raises FileNotFoundError / ValueError naming the source."""
    if os.path.isdir(source):
        return [row for path in folder_files(source) for row in read_rows(path, hub_split)]
    if os.path.exists(source):
        if source.endswith(".jsonl"):
            rows: list[Any] = []
            with open(source, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:
                            rows.append(None)
            return rows
        if source.endswith(".json"):
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, list):
                raise ValueError(f"{source}: expected a JSON list of rows, got {type(data).__name__}")
            return data
        if source.endswith(".parquet"):
            import datasets

            return list(datasets.load_dataset("parquet", data_files=source, split="train"))
        raise ValueError(f"{source}: unsupported file type; expected .json, .jsonl or .parquet")
    if source.startswith((".", "/")) or source.endswith((".json", ".jsonl", ".parquet")):
        raise FileNotFoundError(f"{source}: no such file")
    import datasets

    return list(datasets.load_dataset(source, split=hub_split))


def write_parquet(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write converted rows as parquet (what verl's RLHFDataset reads). Raises ValueError on no rows."""
    if not rows:
        raise ValueError(f"no rows to write to {path}: every source row was skipped")
    import pandas as pd

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(list(rows)).to_parquet(path, index=False)
