"""Rejection sampling for Stage 2: N trials per problem from an engine; a trajectory is kept only if it
is correct AND its format score is 0 (a `Judge` says so); append-only JSONL records keyed by a stable
problem id make a run resumable; kept trajectories become SFT rows of canonical ids (tags as their
special tokens, content encoded segment by segment) whose layout is validated. No `reward` import here:
the caller passes the judge (the CLI passes reward's)."""

from __future__ import annotations

import json
import os
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from npr.layout import build_layout
from npr.templates import Templates


@dataclass(frozen=True)
class Problem:
    """One prepared problem (a row of `npr data`'s parquet)."""

    problem_id: str
    prompt: list[dict]  # chat messages
    ground_truth: str
    data_source: str
    extra_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """A judge's view of one trajectory; kept iff correct and format_score == 0."""

    is_correct: bool
    format_score: float
    violations: tuple[str, ...] = ()

    @property
    def is_kept(self) -> bool:
        return self.is_correct and self.format_score == 0


Judge = Callable[[str, Problem], Verdict]


class Engine(Protocol):
    def generate(self, prompt_ids: Sequence[int], num_trials: int, seed: int) -> list[str]:
        """`num_trials` response texts (tags as text, no EOS) for one prompt; reproducible for a seed."""


class ReferenceEngine:
    """The reference fork-join decoder as a sampling engine (any HF causal LM whose tokenizer has the tags)."""

    def __init__(self, decoder: Any, temperature: float = 1.0, script: Any = None, processors: Sequence = ()):
        from npr.decoding import SamplingParams

        self.decoder, self.script, self.processors = decoder, script, list(processors)
        self.params = lambda seed: SamplingParams(temperature=temperature, seed=seed)

    def generate(self, prompt_ids: Sequence[int], num_trials: int, seed: int) -> list[str]:
        results = self.decoder.generate([list(prompt_ids)] * num_trials, self.params(seed), script=self.script,
                                        processors=self.processors)
        stop = self.decoder.stop_token_ids
        tok = self.decoder.tokenizer
        return [tok.decode([t for t in r.token_ids if t not in stop], skip_special_tokens=False) for r in results]


def load_problems(path: str) -> tuple[list[Problem], list[tuple[int, str]]]:
    """Problems of a prepared parquet/JSONL (verl's RL layout); bad rows come back as (index, reason)."""
    import datasets

    kind = "parquet" if path.endswith(".parquet") else "json"
    rows = datasets.load_dataset(kind, data_files=path, split="train")
    problems, skipped, seen = [], [], set()
    for index, row in enumerate(rows):
        try:
            info = dict(row.get("extra_info") or {})
            truth = (row.get("reward_model") or {}).get("ground_truth")
            prompt = row.get("prompt")
            if not isinstance(prompt, list) or not prompt or truth is None:
                raise ValueError("needs `prompt` (chat messages) and `reward_model.ground_truth`; prepare it with `npr data`")
            pid = info.get("problem_id") or f"{row.get('data_source')}:{index}"
            if pid in seen:
                raise ValueError(f"duplicate problem_id {pid!r}")
            seen.add(pid)
            problems.append(Problem(str(pid), list(prompt), str(truth), str(row.get("data_source")), info))
        except (ValueError, TypeError, AttributeError) as err:
            skipped.append((index, str(err)))
    return problems, skipped


def read_records(path: str) -> tuple[dict[str, dict], list[str]]:
    """problem_id -> record of an append-only records file, and notes on lines that were cut short
    (an interrupted write) and are ignored; the problem is then sampled again."""
    records, notes = {}, []
    if not os.path.exists(path):
        return records, notes
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
                records[record["problem_id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                notes.append(f"{path}:{number}: unreadable record ignored (interrupted write?)")
    return records, notes


def trials_seed(seed: int, problem_id: str) -> int:
    """The seed of one problem's N trials: stable across runs and resumptions, independent of the order of
    problems (crc32 of the problem id; `npr.eval.runner` seeds its samples differently)."""
    return (seed * 1_000_003 + zlib.crc32(problem_id.encode("utf-8"))) % (2 ** 31)


@dataclass
class Summary:
    num_problems: int = 0
    num_resumed: int = 0
    num_trials: int = 0
    num_correct: int = 0
    num_format_ok: int = 0
    num_kept: int = 0
    num_problems_kept: int = 0
    num_sft_rows: int = 0
    dropped: list[str] = field(default_factory=list)  # kept trajectories whose ids failed layout validation
    notes: list[str] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.num_kept / self.num_trials if self.num_trials else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "acceptance_rate": round(self.acceptance_rate, 4)}


class RejectionSampler:
    """Samples problems with `engine`, judges every trial, appends one record per problem to `records_path`."""

    def __init__(self, engine: Engine, judge: Judge, tokenizer: Any, num_trials: int = 8, seed: int = 0):
        if num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {num_trials}")
        self.engine, self.judge, self.tokenizer = engine, judge, tokenizer
        self.num_trials, self.seed = num_trials, seed

    def prompt_ids(self, problem: Problem) -> list[int]:
        out = self.tokenizer.apply_chat_template(problem.prompt, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    def sample(self, problem: Problem) -> dict:
        texts = self.engine.generate(self.prompt_ids(problem), self.num_trials, trials_seed(self.seed, problem.problem_id))
        trials = []
        for text in texts:
            verdict = self.judge(text, problem)
            trials.append({"text": text, "is_correct": verdict.is_correct, "format_score": verdict.format_score,
                           "violations": list(verdict.violations), "is_kept": verdict.is_kept})
        return {"problem_id": problem.problem_id, "data_source": problem.data_source, "prompt": problem.prompt,
                "ground_truth": problem.ground_truth, "trials": trials}

    def run(self, problems: Sequence[Problem], records_path: str, progress: bool = True,
            stop: Callable[[int], bool] | None = None) -> Summary:
        """Sample every problem without a record yet; `stop(n)` (n problems done in this call) ends the run
        early, as an interruption would. Returns the summary over all records of these problems."""
        done, notes = read_records(records_path)
        todo = [p for p in problems if p.problem_id not in done]
        summary = Summary(num_resumed=len(problems) - len(todo), notes=notes)
        bar = _progress(len(problems), summary.num_resumed, progress)
        os.makedirs(os.path.dirname(os.path.abspath(records_path)), exist_ok=True)
        kept = trials = 0
        with open(records_path, "a", encoding="utf-8") as f:
            if f.tell() and not _ends_with_newline(records_path):
                f.write("\n")  # a cut-short last line stays on its own line (ignored), new records start clean
            for count, problem in enumerate(todo):
                if stop is not None and stop(count):
                    break
                record = self.sample(problem)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                done[problem.problem_id] = record
                trials += len(record["trials"])
                kept += sum(t["is_kept"] for t in record["trials"])
                if bar is not None:
                    bar.set_postfix(accepted=f"{kept}/{trials}", rate=f"{kept / max(trials, 1):.1%}")
                    bar.update(1)
        if bar is not None:
            bar.close()
        for problem in problems:
            record = done.get(problem.problem_id)
            if record is None:
                continue
            summary.num_problems += 1
            summary.num_trials += len(record["trials"])
            summary.num_correct += sum(t["is_correct"] for t in record["trials"])
            summary.num_format_ok += sum(t["format_score"] == 0 for t in record["trials"])
            n = sum(t["is_kept"] for t in record["trials"])
            summary.num_kept += n
            summary.num_problems_kept += n > 0
        return summary


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="npr sample", unit="problem", file=sys.stderr)


def iter_kept(records_path: str, problem_ids: Sequence[str] | None = None) -> Iterator[tuple[dict, int, dict]]:
    """(record, trial index, trial) of every kept trajectory, in file order."""
    records, _ = read_records(records_path)
    wanted = None if problem_ids is None else set(problem_ids)
    for pid, record in records.items():
        if wanted is None or pid in wanted:
            for index, trial in enumerate(record["trials"]):
                if trial["is_kept"]:
                    yield record, index, trial


def sft_rows(records_path: str, tokenizer: Any, problem_ids: Sequence[str] | None = None,
             summary: Summary | None = None) -> list[dict]:
    """SFT rows of every kept trajectory: `prompt_ids` (chat template), `response_ids` = canonical ids of
    the response text (`Templates.text_to_ids`) + EOS, and the messages. A trajectory whose ids do not
    form a valid layout is dropped and reported in `summary.dropped` (problem id, trial, reason)."""
    templates = Templates.from_tokenizer(tokenizer)
    eos = tokenizer.eos_token_id
    rows = []
    for record, index, trial in iter_kept(records_path, problem_ids):
        out = tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True)
        prompt_ids = list(out["input_ids"] if hasattr(out, "keys") else out)
        response_ids = templates.text_to_ids(trial["text"]) + [eos]
        layout = build_layout(prompt_ids + response_ids, templates.tags, len(prompt_ids))
        if not layout.is_valid:
            if summary is not None:
                summary.dropped.append(f"{record['problem_id']} trial {index}: {layout.error}")
            continue
        rows.append({"problem_id": record["problem_id"], "trial": index, "data_source": record["data_source"],
                     "ground_truth": record["ground_truth"],
                     "messages": record["prompt"] + [{"role": "assistant", "content": trial["text"]}],
                     "prompt_ids": prompt_ids, "response_ids": response_ids})
    if summary is not None:
        summary.num_sft_rows = len(rows)
    return rows
