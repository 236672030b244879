"""Rejection sampling for Stage 2: N trials per problem from an engine, many in flight; a trajectory is
kept only if it is correct AND its format score is 0 (a `Judge` says so); append-only JSONL records, one
per trial keyed by a stable problem id and the trial index, make a run resumable (a killed run loses only
the trials in flight); kept trajectories become SFT rows of canonical ids (tags as their special tokens,
content encoded segment by segment) whose layout is validated. No `reward` import here: the caller passes
the judge (the CLI makes one from the grader of `npr.graders`)."""

from __future__ import annotations

import json
import os
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

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


def make_judge(grader: Any, max_branches: int = 5) -> Judge:
    """The Stage-2 rule from a grader (`npr.graders`; reward's by default): correct by `grader.grade` on
    the final answer, and `grader.format_score`."""
    def judge(text: str, problem: Problem) -> Verdict:
        score, violations = grader.format_score(text, max_branches)
        return Verdict(bool(grader.grade(text, problem.ground_truth, extra_info=problem.extra_info)), score,
                       tuple(violations))

    return judge


class Engine(Protocol):
    """What the sampler drives (npr.eval's engines are ones): `tokenizer`, and `stream(requests, sampling,
    concurrency)` yielding `npr.eval.engines.Finished` as requests finish."""

    tokenizer: Any

    def stream(self, requests: Iterable[Any], sampling: Any, concurrency: int = 1) -> Iterator[Any]: ...


def response_text(output: Any, tokenizer: Any) -> str:
    """A trial's text from an engine output, the same for every engine: the response ids decoded with
    the tags kept and the final stop token (a special token that is not a tag) dropped."""
    ids = list(output.trajectory.token_ids)
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    special |= {t for t in (getattr(tokenizer, "eos_token_id", None),) if t is not None}
    try:
        from npr.schema import TagIds

        special -= set(TagIds.from_tokenizer(tokenizer).all)
    except ValueError:
        pass
    if ids and ids[-1] in special:
        ids = ids[:-1]
    return tokenizer.decode(ids, skip_special_tokens=False)


class ReferenceEngine:
    """A reference fork-join `Decoder` as a sampling engine, with a script object and logits processors of
    your own (tests force answers this way); any HF causal LM whose tokenizer has the tags."""

    name = "reference"

    def __init__(self, decoder: Any, temperature: float = 1.0, script: Any = None, processors: Sequence = ()):
        self.decoder, self.script, self.processors = decoder, script, list(processors)
        self.temperature, self.tokenizer = temperature, decoder.tokenizer

    def stream(self, requests: Iterable[Any], sampling: Any = None, concurrency: int = 1) -> Iterator[Any]:
        """Decoder calls of up to `concurrency` requests; request i samples from its seed alone (the
        decoder's per-prompt `seeds`, as SGLang's plugin does). `sampling` is ignored: the decoder's
        config and the temperature given here rule."""
        import time

        from npr.decoding import SamplingParams
        from npr.eval.engines import Finished, Output, check_concurrency

        check_concurrency(concurrency)
        todo = list(requests)
        for at in range(0, len(todo), concurrency):
            chunk = todo[at:at + concurrency]
            start = time.perf_counter()
            results = self.decoder.generate([list(r.prompt_ids) for r in chunk],
                                            SamplingParams(temperature=self.temperature, seed=0),
                                            script=self.script, processors=self.processors,
                                            seeds=[r.seed for r in chunk])
            latency = time.perf_counter() - start
            for r, result in zip(chunk, results):
                yield Finished(r, Output(result.trajectory(), result.text), latency)


def load_problems(path: str) -> tuple[list[Problem], list[tuple[int, str]]]:
    """Problems of a prepared parquet/JSONL (verl's RL layout), or a folder of such files (in file-name
    order, one kind); bad rows come back as (index, reason)."""
    import datasets

    from npr.data import folder_files

    files = folder_files(path, (".parquet", ".jsonl", ".json")) if os.path.isdir(path) else [path]
    kinds = {"parquet" if f.endswith(".parquet") else "json" for f in files}
    if len(kinds) != 1:
        raise ValueError(f"{path}: mixes parquet and JSON files; keep one kind per folder")
    rows = datasets.load_dataset(kinds.pop(), data_files=files, split="train")
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


def read_records(path: str, num_trials: int | None = None) -> tuple[dict[str, dict], list[str]]:
    """problem_id -> record (with "trials" in trial order) of an append-only records file, and notes on
    lines that were cut short (an interrupted write) and are ignored. A line is one trial
    (problem_id, trial, ...) or, from older runs, one whole problem (problem_id, trials). A trial seen
    twice keeps its first line. `num_trials`: keep only trials 0..num_trials-1."""
    problems: dict[str, dict] = {}
    trials: dict[str, dict[int, dict]] = {}
    notes: list[str] = []
    if not os.path.exists(path):
        return problems, notes
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pid = record["problem_id"]
                items = [(int(record["trial"]), record["result"])] if "trial" in record else list(enumerate(record["trials"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                notes.append(f"{path}:{number}: unreadable record ignored (interrupted write?)")
                continue
            problems.setdefault(pid, {k: v for k, v in record.items() if k not in ("trial", "result", "trials")})
            for index, trial in items:
                trials.setdefault(pid, {}).setdefault(index, trial)
    out = {}
    for pid, record in problems.items():
        got = trials.get(pid, {})
        indices = sorted(i for i in got if num_trials is None or i < num_trials)
        out[pid] = {**record, "trials": [got[i] for i in indices], "trial_ids": indices}
    return out, notes


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
    num_incomplete: int = 0  # problems with some but not all of their trials (an interrupted run)
    num_new_trials: int = 0  # trials sampled by this call
    wall_s: float = 0.0  # this call's sampling time
    dropped: list[str] = field(default_factory=list)  # kept trajectories whose ids failed layout validation
    notes: list[str] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.num_kept / self.num_trials if self.num_trials else 0.0

    @property
    def samples_per_s(self) -> float | None:
        """Trials sampled by this call per second of its sampling time."""
        return self.num_new_trials / self.wall_s if self.wall_s > 0 and self.num_new_trials else None

    def as_dict(self) -> dict:
        return {**asdict(self), "acceptance_rate": round(self.acceptance_rate, 4), "samples_per_s": self.samples_per_s}


class RejectionSampler:
    """Samples problems with `engine`, judges every trial and appends one record per trial to
    `records_path` as it finishes, with up to `concurrency` trials in flight. Trial j of a problem decodes
    with request seed `request_seed(trials_seed(seed, problem_id), j)`, whatever else is in flight, so a
    resumed run draws what an uninterrupted one would have. `sampling` (npr.eval.engines.Sampling) and
    `script` (branch lengths per block) go to the engine with every request."""

    def __init__(self, engine: Engine, judge: Judge, tokenizer: Any = None, num_trials: int = 8, seed: int = 0,
                 concurrency: int = 1, sampling: Any = None, script: Sequence[Sequence[int]] | None = None):
        if num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {num_trials}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1 (trials in flight), got {concurrency!r}")
        self.engine, self.judge = engine, judge
        self.tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
        self.num_trials, self.seed, self.concurrency = num_trials, seed, concurrency
        self.sampling, self.script = sampling, tuple(tuple(b) for b in script) if script else None

    def prompt_ids(self, problem: Problem) -> list[int]:
        out = self.tokenizer.apply_chat_template(problem.prompt, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    def requests(self, problems: Sequence[Problem], done: dict[str, dict]) -> Iterator[Any]:
        """The requests of every trial without a record, problem by problem (key: (problem, trial))."""
        from npr.eval.engines import Request, request_seed

        for problem in problems:
            have = set((done.get(problem.problem_id) or {}).get("trial_ids", ()))
            missing = [j for j in range(self.num_trials) if j not in have]
            if not missing:
                continue
            prompt, seed = tuple(self.prompt_ids(problem)), trials_seed(self.seed, problem.problem_id)
            for j in missing:
                yield Request(prompt, request_seed(seed, j), "parallel", self.script, (problem, j))

    def trial(self, problem: Problem, j: int, output: Any) -> dict:
        """One records.jsonl line: the problem's fields, the trial index and the judged trial."""
        text = response_text(output, self.engine.tokenizer)
        verdict = self.judge(text, problem)
        return {"problem_id": problem.problem_id, "trial": j, "data_source": problem.data_source,
                "prompt": problem.prompt, "ground_truth": problem.ground_truth,
                "result": {"text": text, "is_correct": verdict.is_correct, "format_score": verdict.format_score,
                           "violations": list(verdict.violations), "is_kept": verdict.is_kept}}

    def run(self, problems: Sequence[Problem], records_path: str, progress: bool = True,
            stop: Callable[[int], bool] | None = None) -> Summary:
        """Sample every trial without a record yet; `stop(n)` (n trials written in this call) ends the run
        early, as an interruption would (the trials in flight are lost). Returns the summary over all
        records of these problems."""
        import time

        done, notes = read_records(records_path, self.num_trials)
        complete = sum(len((done.get(p.problem_id) or {}).get("trials", ())) == self.num_trials for p in problems)
        summary = Summary(num_resumed=complete, notes=notes)
        bar = _progress(len(problems) * self.num_trials,
                        sum(len((done.get(p.problem_id) or {}).get("trials", ())) for p in problems), progress)
        os.makedirs(os.path.dirname(os.path.abspath(records_path)), exist_ok=True)
        kept = trials = correct = 0
        start = time.perf_counter()
        with open(records_path, "a", encoding="utf-8") as f:
            if f.tell() and not _ends_with_newline(records_path):
                f.write("\n")  # a cut-short last line stays on its own line (ignored), new records start clean
            if stop is None or not stop(0):
                stream = self.engine.stream(self.requests(problems, done), self.sampling, self.concurrency)
                for finished in stream:
                    problem, j = finished.request.key
                    line = self.trial(problem, j, finished.output)
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    f.flush()
                    trials += 1
                    kept += line["result"]["is_kept"]
                    correct += line["result"]["is_correct"]
                    if bar is not None:
                        bar.set_postfix(accepted=f"{kept}/{trials}", rate=f"{kept / trials:.1%}",
                                        correct=f"{correct / trials:.1%}")
                        bar.update(1)
                    if stop is not None and stop(trials):
                        close = getattr(stream, "close", None)
                        if close is not None:
                            close()
                        break
        summary.num_new_trials, summary.wall_s = trials, time.perf_counter() - start
        if bar is not None:
            bar.close()
        done, _ = read_records(records_path, self.num_trials)
        for problem in problems:
            record = done.get(problem.problem_id)
            if record is None:
                continue
            if len(record["trials"]) < self.num_trials:
                summary.num_incomplete += 1
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
            for index, trial in zip(record["trial_ids"], record["trials"]):
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
