"""The same-output fork-join speed-up of an eval run: a parallel sample is decoded again by the reference
fork-join decoder at batch 1 (its request seed and script reproduce it) and then replayed sequentially
over the same linearised ids (`npr.decoding.sequential_replay`, the method of `npr demo`), both timed.
Both sides run the same sampler with the same sampling parameters (the replay's forced logits leave one
token drawable), so a step costs each side the same work apart from the forward; each side is timed
`REPEATS` times, interleaved, and the fastest kept (timing noise only ever adds time).
Rows go to replay.jsonl (append-only, keyed by benchmark, problem id and sample), so a resumed run times
only the samples it has not timed yet."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

REPLAY_FILE = "replay.jsonl"
REPEATS = 3


def read_replay(path: str) -> list[dict[str, Any]]:
    """The rows of a replay.jsonl (a line cut short by a killed run is ignored)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _key(r: dict[str, Any]) -> tuple:
    return r["benchmark"], str(r["problem_id"]), int(r["sample"])


def replay_one(engine, record: dict[str, Any], sampling, script) -> dict[str, Any] | str:
    """Time `record`'s trajectory fork-join (batch 1) and replayed sequentially (batch 1) on the reference
    engine `engine`; returns the row, or why the sample cannot be replayed."""
    from npr.decoding import SamplingParams, sequential_replay
    from npr.eval.engines import Request

    traj = record["trajectory"]
    prompt = list(traj["prompt_ids"])
    request = Request(tuple(prompt), int(record["request_seed"]), "parallel", script)
    # the sequential side samples as the parallel one did (its processors force the ids whatever the draw)
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, seed=0)
    fork_join_s = sequential_s = float("inf")
    decoder = forced = None
    for _ in range(REPEATS):
        start = time.perf_counter()
        [finished] = list(engine.stream([request], sampling, 1))
        fork_join_s = min(fork_join_s, time.perf_counter() - start)
        again = finished.output.trajectory
        if list(again.token_ids) != list(traj["token_ids"]):
            return "the reference decoder does not reproduce its ids (another engine's output, or float ties)"
        if decoder is None:
            decoder, forced = sequential_replay(engine.model, engine.tokenizer, again)
            decoder.generate([prompt], params, processors=forced)  # its K/V pool's first allocation, untimed
        start = time.perf_counter()
        [replayed] = decoder.generate([prompt], params, processors=forced)
        sequential_s = min(sequential_s, time.perf_counter() - start)
        if list(replayed.token_ids) != list(traj["token_ids"]):
            return "the sequential replay decoded other ids"
    return {"benchmark": record["benchmark"], "problem_id": record["problem_id"], "sample": record["sample"],
            "fork_join_s": fork_join_s, "sequential_s": sequential_s, "total_tokens": again.stats["total_tokens"],
            "critical_path_tokens": again.stats["critical_path_tokens"]}


def run_replay(config, records: Sequence[dict[str, Any]], engine=None) -> tuple[list[dict[str, Any]], list[str]]:
    """Replay up to `config.replay` finished parallel samples per benchmark (in file order) that have no
    row yet, on `engine` when it is the reference engine, else on one loaded from `config.model`.
    Returns (all rows of these benchmarks, notes on samples that could not be replayed)."""
    from npr.eval.engines import ReferenceEngine
    from npr.loading import parse_script

    path = os.path.join(config.output_dir, REPLAY_FILE)
    rows = read_replay(path)
    names = {spec.name for spec in config.benchmarks}
    rows = [r for r in rows if r["benchmark"] in names]
    if not config.replay or "parallel" not in config.modes:
        return rows, []
    have = {_key(r) for r in rows}
    wanted = []
    for name in sorted(names):
        chosen = [r for r in records if r["benchmark"] == name and r["mode"] == "parallel"
                  and r["finish_reason"] == "stop" and "request_seed" in r][: config.replay]
        wanted += [r for r in chosen if _key(r) not in have]
    notes: list[str] = []
    if not wanted:
        return rows, notes
    own = not isinstance(engine, ReferenceEngine)
    reference = ReferenceEngine(config.model, config.device, config.dtype) if own else engine
    script = parse_script(config.script)
    script = tuple(tuple(b) for b in script.branch_lengths) if script else None
    sampling = config.sampling
    list(reference.stream(_requests(wanted[:1], script), sampling, 1))  # warm-up, untimed
    with open(path, "a", encoding="utf-8") as sink:
        for record in wanted:
            row = replay_one(reference, record, sampling, script)
            if isinstance(row, str):
                notes.append(f"replay of {record['benchmark']} {record['problem_id']} sample {record['sample']} "
                             f"skipped: {row}")
                continue
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            rows.append(row)
    return rows, notes


def _requests(records, script):
    from npr.eval.engines import Request

    for r in records:
        yield Request(tuple(r["trajectory"]["prompt_ids"]), int(r["request_seed"]), "parallel", script)
