"""Benchmark registry and loaders: each benchmark's fields, answer type and grader, read with `datasets`
from local files (json, jsonl, parquet, csv; a file or a folder of them) or a hub name. A row that lacks a
benchmark's fields is rejected when the file is read, naming the fields it needs and those it has."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from npr.errors import NprError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = ("Please reason step by step, and put the letter of the correct option "
                      "within \\boxed{} (e.g. \\boxed{A}).")
TEXT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
FILE_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class BenchmarkError(NprError, ValueError):
    """A benchmark name, source or file that cannot be used; the message names the value and the fix."""


@dataclass(frozen=True)
class Problem:
    """One evaluation item: `prompt` is the user message; `reference` what `grade` compares against
    (a string or a list of acceptable strings); `extra_info` goes to the grader (option texts)."""

    benchmark: str
    problem_id: str
    prompt: str
    reference: Any
    extra_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark. `formats`: the accepted sets of required fields (any one must be present);
    `answer_type`: "math" | "choice" | "text"; `grader`: the name recorded with every graded sample."""

    name: str
    title: str
    hub: str
    formats: tuple[tuple[str, ...], ...]
    answer_type: str
    to_problem: Callable[[Mapping[str, Any], tuple[str, ...], int], tuple[str, Any, dict]]
    hub_config: str | None = None
    hub_split: str = "test"
    reference_score: float | None = None  # the original NPR's avg@8 (%), for the report

    @property
    def grader(self) -> str:
        return {"math": "math-verify", "choice": "letter", "text": "normalized-text"}[self.answer_type]


# -- row converters: (row, the format that matched, row index) -> (prompt, reference, extra_info) ------------
def _math(row, fmt, index):
    question, answer = fmt[0], fmt[1]
    return f"{row[question]}\n\n{MATH_INSTRUCTION}", row[answer], {}


def _plain(row, fmt, index):
    """The question as the whole prompt (synthetic tasks whose models were trained on exactly that)."""
    return str(row[fmt[0]]), str(row[fmt[1]]), {}


def _olympiad(row, fmt, index):
    context = row.get("context")
    question = f"{context}\n\n{row['question']}" if isinstance(context, str) and context.strip() else row["question"]
    answers = row["final_answer"]
    answers = list(answers) if isinstance(answers, (list, tuple)) or hasattr(answers, "tolist") else [answers]
    # OlympiadBench writes answers as "$...$"; the grader wants the math inside
    return f"{question}\n\n{MATH_INSTRUCTION}", [str(a).strip().strip("$").strip() for a in answers], {}


def _choices(question: str, options: Sequence[str]) -> str:
    lines = [f"({LETTERS[i]}) {text}" for i, text in enumerate(options)]
    return f"{question}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"


def _choice_problem(question: str, options: Sequence[str], letter: str):
    options = [str(o) for o in options]
    return _choices(question, options), letter, {"options": options}


def _zebra(row, fmt, index):
    choices = [str(c) for c in row["choices"]]
    answer = str(row["answer"])
    if answer not in choices:
        raise BenchmarkError(f"ZebraLogic row {index}: answer {answer!r} is not one of its choices {choices}")
    return _choice_problem(f"{row['puzzle']}\n\n{row['question']}", choices, LETTERS[choices.index(answer)])


def _gpqa(row, fmt, index):
    correct = str(row["Correct Answer"]).strip()
    options = [correct] + [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)]
    # fixed, per-question shuffle (the file lists the correct answer first)
    rng = random.Random(int(hashlib.sha256(str(row["Question"]).encode()).hexdigest()[:16], 16))
    rng.shuffle(options)
    return _choice_problem(str(row["Question"]).strip(), options, LETTERS[options.index(correct)])


def _mmlu_pro(row, fmt, index):
    options = [str(o) for o in row["options"]]
    letter = str(row["answer"]).strip()
    if letter not in LETTERS[: len(options)]:
        raise BenchmarkError(f"MMLU-Pro row {index}: answer {letter!r} is not a letter of its "
                             f"{len(options)} options (A-{LETTERS[len(options) - 1]})")
    return _choice_problem(str(row["question"]), options, letter)


def _bbeh(row, fmt, index):
    return f"{row['input']}\n\n{TEXT_INSTRUCTION}", str(row["target"]), {}


def _make_registry() -> dict[str, Benchmark]:
    b = [
        Benchmark("aime24", "AIME24", "HuggingFaceH4/aime_2024", (("problem", "answer"), ("Problem", "Answer")),
                  "math", _math, hub_split="train", reference_score=63.3),
        Benchmark("aime25", "AIME25", "math-ai/aime25", (("question", "answer"), ("problem", "answer")),
                  "math", _math, reference_score=50.4),
        Benchmark("hmmt25", "HMMT Feb 2025", "MathArena/hmmt_feb_2025", (("problem", "answer"),),
                  "math", _math, hub_split="train", reference_score=30.8),
        Benchmark("olympiadbench", "OlympiadBench", "Hothan/OlympiadBench", (("question", "final_answer"),),
                  "math", _olympiad, hub_config="OE_TO_maths_en_COMP", hub_split="train", reference_score=63.7),
        Benchmark("minerva", "Minerva-Math", "math-ai/minervamath", (("question", "answer"), ("problem", "answer")),
                  "math", _math, reference_score=43.0),
        Benchmark("zebralogic", "ZebraLogic", "allenai/ZebraLogicBench-private",
                  (("puzzle", "question", "choices", "answer"),), "choice", _zebra, hub_config="mc_mode",
                  reference_score=81.7),
        Benchmark("amc23", "AMC23", "math-ai/amc23", (("question", "answer"),), "math", _math, reference_score=93.1),
        Benchmark("math500", "MATH500", "HuggingFaceH4/MATH-500", (("problem", "answer"),), "math", _math,
                  reference_score=93.6),
        Benchmark("gpqa_diamond", "GPQA-Diamond", "Idavidrein/gpqa",
                  (("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),),
                  "choice", _gpqa, hub_config="gpqa_diamond", hub_split="train"),
        Benchmark("mmlu_pro", "MMLU-Pro", "TIGER-Lab/MMLU-Pro", (("question", "options", "answer"),), "choice",
                  _mmlu_pro),
        Benchmark("demo_count", "Demo: count of odd digits", "", (("question", "answer"),), "math", _plain, hub_split="test"),
        Benchmark("bbeh", "BBEH", "BBEH/bbeh", (("input", "target"),), "text", _bbeh, hub_split="train"),
    ]
    return {x.name: x for x in b}


BENCHMARKS: dict[str, Benchmark] = _make_registry()
ALIASES = {"hmmt_feb_2025": "hmmt25", "minerva_math": "minerva", "gpqa": "gpqa_diamond", "mmlu-pro": "mmlu_pro",
           "olympiad": "olympiadbench", "gpqa-diamond": "gpqa_diamond", "hmmt": "hmmt25"}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark (case-insensitive; a few aliases). Raises BenchmarkError listing the names."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


def _data_files(path: str) -> tuple[str, list[str]]:
    """(datasets builder, files) of a local file or folder; raises BenchmarkError for other suffixes."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if os.path.splitext(f)[1].lower() in FILE_SUFFIXES)
        if not files:
            raise BenchmarkError(f"{path}: the folder holds no .json, .jsonl, .parquet or .csv file")
    else:
        files = [path]
    kinds = {FILE_SUFFIXES.get(os.path.splitext(f)[1].lower()) for f in files}
    if None in kinds or len(kinds) != 1:
        raise BenchmarkError(f"{path}: expected .json, .jsonl, .parquet or .csv files (one kind), got "
                             f"{sorted(os.path.basename(f) for f in files)}")
    return kinds.pop(), files


def _has_examples_field(path: str) -> bool:
    """A JSON object whose rows sit under "examples" (BIG-Bench / BBEH task files)."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16).lstrip()
    if not head.startswith("{") or '"examples"' not in head:
        return False
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError:
        return False  # JSON lines: one object per line
    return isinstance(data, dict) and isinstance(data.get("examples"), list)


def load_rows(source: str, split: str | None = None, config: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local file/folder (json, jsonl, parquet) or a hub dataset, through `datasets`."""
    import datasets

    path = os.path.expanduser(source)
    if os.path.exists(path):
        builder, files = _data_files(path)
        kwargs = {"field": "examples"} if builder == "json" and _has_examples_field(files[0]) else {}
        try:
            data = datasets.load_dataset(builder, data_files=files, split="train", keep_in_memory=True, **kwargs)
        except Exception as err:  # datasets raises many kinds for unreadable files
            raise BenchmarkError(f"{source}: could not read it as {builder}: {err}") from None
    elif source.startswith((".", "/", "~")):
        raise BenchmarkError(f"{source}: no such file or folder; give a .json/.jsonl/.parquet file, a folder of "
                             "them, or a hub dataset name")
    else:
        try:
            data = datasets.load_dataset(source, config, split=split or "test")
        except Exception as err:  # no network, unknown name, gated dataset, wrong split...
            raise BenchmarkError(f"hub dataset {source!r} (config {config}, split {split or 'test'}) could not be "
                                 f"loaded ({type(err).__name__}: {str(err)[:300]}); download it and give the local "
                                 "file or folder as the benchmark's source") from None
    return [dict(row) for row in data]


def problems_from_rows(benchmark: Benchmark | str, rows: Sequence[Mapping[str, Any]], source: str = "rows",
                       ) -> list[Problem]:
    """Problems of a benchmark from its rows; raises BenchmarkError naming the fields a row lacks."""
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    out = []
    for index, row in enumerate(rows):
        fmt = next((f for f in bench.formats if all(k in row and row[k] is not None for k in f)), None)
        if fmt is None:
            wanted = " or ".join("(" + ", ".join(f) + ")" for f in bench.formats)
            raise BenchmarkError(f"{source}: row {index} lacks the fields of {bench.title}: expected {wanted}; "
                                 f"it has {sorted(row)}. Rename the columns, or choose the benchmark whose "
                                 "format the file has")
        prompt, reference, extra = bench.to_problem(row, fmt, index)
        raw_id = next((row[k] for k in ("unique_id", "id", "ID", "problem_idx", "question_id") if row.get(k) is not None),
                      index)
        out.append(Problem(bench.name, str(raw_id), prompt, reference, extra))
    ids = [p.problem_id for p in out]
    if len(set(ids)) != len(ids):  # resumption keys on the id: fall back to positions
        out = [Problem(p.benchmark, str(i), p.prompt, p.reference, p.extra_info) for i, p in enumerate(out)]
    return out


def load_benchmark(name: str, source: str | None = None, *, split: str | None = None,
                   limit: int | None = None) -> list[Problem]:
    """Problems of benchmark `name` from `source` (local file/folder or hub name; default: its hub dataset).
    limit keeps the first `limit` problems. Raises BenchmarkError for an unknown name, a missing file or
    rows lacking the benchmark's fields."""
    bench = get_benchmark(name)
    if source is None:
        rows = load_rows(bench.hub, split or bench.hub_split, bench.hub_config)
    else:
        rows = load_rows(source, split, None)
    if not rows:
        raise BenchmarkError(f"{source or bench.hub}: no rows")
    problems = problems_from_rows(bench, rows, source or bench.hub)
    return problems[:limit] if limit is not None else problems


def grade_sample(problem: Problem, response_text: str, grader=None) -> bool:
    """The problem's grader on one response (never raises): `grader.grade` (default: the registered
    "reward" grader, see npr.graders) with the option texts."""
    if grader is None:
        from npr.graders import load_grader

        grader = load_grader()
    return grader.grade(response_text, problem.reference, extra_info=problem.extra_info or None)
