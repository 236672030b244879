"""`run_eval`: benchmarks x modes x problems x n samples on one engine, up to `concurrency` samples in
flight. Writes `samples.jsonl` (one line per sample, appended as soon as it finishes; a rerun skips every
sample already there, so a killed run loses only the samples in flight), `summary.json` and the report.
Sample j of a problem decodes with its own request seed, derived from the run seed, the benchmark, the
problem id and j, so a resumed run draws what the first would have, whatever else is in flight."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any

from npr.eval.benchmarks import Problem, get_benchmark, grade_sample, load_benchmark
from npr.eval.config import EvalConfig
from npr.eval.engines import Request, make_engine, request_seed
from npr.eval.metrics import replay_summary, speedup, structure_of, summarize_samples
from npr.eval.replay import run_replay

SAMPLES_FILE, SUMMARY_FILE, REPORT_FILE = "samples.jsonl", "summary.json", "report.md"


def problem_seed(seed: int, benchmark: str, problem_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{benchmark}:{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 33


def read_samples(path: str) -> list[dict[str, Any]]:
    """The records of a samples.jsonl; a torn last line (a run killed mid-write) is dropped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not JSON; the file is damaged: "
                             "move it away to start the run afresh") from None
    return out


def drop_torn_tail(path: str) -> None:
    """Cut a last line that a killed run left unfinished, so appended records start on a line of their own."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        data = f.read()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:  # torn: read_samples dropped it too
        with open(path, "r+b") as f:
            f.truncate(start)
        return
    with open(path, "ab") as f:  # a whole record that only lacks its newline
        f.write(b"\n")


def _key(r: dict[str, Any]) -> tuple:
    return r["benchmark"], r["mode"], str(r["problem_id"]), int(r["sample"])


def _encode(tokenizer, prompt: str, use_chat: bool) -> list[int]:
    from npr.loading import encode_prompt

    return encode_prompt(tokenizer, prompt, use_chat)


def _tags(tokenizer):
    from npr.schema import TagIds

    try:
        return TagIds.from_tokenizer(tokenizer)
    except ValueError:
        return None  # a Stage-1 tokenizer: tags are text; parallel mode is refused by the engine


def make_record(config: EvalConfig, engine, problem: Problem, mode: str, sample: int, seed: int, output,
                phase_id: str, elapsed: float, latency: float, tags, grader) -> dict[str, Any]:
    """One samples.jsonl line: the graded sample, its structure and its timing (`latency_s`: time to
    answer at `concurrency` requests in flight; `phase_elapsed_s`: seconds from its phase's start)."""
    from npr.loading import answer_text

    traj = output.trajectory
    text = answer_text(output.text, engine.tokenizer)
    if mode == "parallel" and tags is not None:
        structure = structure_of(traj, tags, config.max_branches)
        widths, critical = list(structure.widths), structure.critical_path_tokens
    else:  # sequential decoding never forks, whatever tags the text holds
        widths, critical = [], len(traj.token_ids)
    score, violations = grader.format_score(text, config.max_branches)
    return {
        "benchmark": problem.benchmark, "mode": mode, "problem_id": problem.problem_id, "sample": sample,
        "seed": seed, "stream": sample, "request_seed": request_seed(seed, sample), "engine": engine.name,
        "reference": problem.reference, "answer": grader.extract_answer(text).text,
        "correct": bool(grade_sample(problem, text, grader)),
        "format_score": score, "format_violations": list(violations), "finish_reason": traj.finish_reason,
        "widths": widths, "num_blocks": len(widths), "total_tokens": len(traj.token_ids),
        "critical_path_tokens": critical, "phase_id": phase_id, "phase_elapsed_s": elapsed, "latency_s": latency,
        "concurrency": config.concurrency, "text": text, "trajectory": traj.to_dict(),
    }


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr)


def run_eval(config: EvalConfig, engine=None, grader=None) -> dict[str, Any]:
    """Run (or resume) the evaluation; returns the summary (also written to output_dir/summary.json).
    `engine`: an already started engine (else one is made from the config and closed at the end);
    `grader`: the grader object (else `load_grader(config.grader)`). Every benchmark is loaded and every
    engine checked for each mode before the first sample. Per benchmark and mode, up to
    `config.concurrency` samples are in flight; each is appended to samples.jsonl as it finishes."""
    from npr.graders import load_grader

    grader = grader if grader is not None else load_grader(config.grader)
    os.makedirs(config.output_dir, exist_ok=True)
    samples_path = os.path.join(config.output_dir, SAMPLES_FILE)
    records = read_samples(samples_path)
    drop_torn_tail(samples_path)
    done = {_key(r) for r in records}
    problems = {spec.name: load_benchmark(spec.name, spec.source, split=spec.split, limit=spec.limit)
                for spec in config.benchmarks}
    todo = [(name, mode) for name, items in problems.items() for mode in config.modes
            if any((name, mode, p.problem_id, j) not in done for p in items for j in range(config.n))]
    own = engine is None
    if own and not todo:  # nothing left to decode: no engine started (a replay loads its own)
        replay, notes = run_replay(config, records)
        return _write(config, build_summary(config, records, 0, replay, notes))
    if own:
        engine = make_engine(config.engine, model=config.model, url=config.url, device=config.device,
                             dtype=config.dtype, engine_args=dict(config.engine_args), api=config.api)
    sampling = config.sampling
    script = None
    if config.script:
        from npr.loading import parse_script

        script = tuple(tuple(b) for b in parse_script(config.script).branch_lengths)
    num_new = 0
    try:
        for mode in config.modes:
            engine.check(mode)  # a parallel run refuses an engine without the plugin, before any work
        tags = _tags(engine.tokenizer)
        run_id = f"{time.time():.6f}"
        warmed: set[str] = set()
        with open(samples_path, "a", encoding="utf-8") as sink:
            for name, items in problems.items():
                by_id = {p.problem_id: p for p in items}
                for mode in config.modes:
                    if (name, mode) not in todo:
                        continue
                    if mode not in warmed:
                        # one untimed call first, so one-time costs (allocation, kernels) stay out of wall times
                        engine.generate([_encode(engine.tokenizer, items[0].prompt, config.chat_template)],
                                        dataclasses.replace(sampling, max_new_tokens=min(8, sampling.max_new_tokens)),
                                        mode, 0, None)
                        warmed.add(mode)
                    keys = [(name, mode, p.problem_id, j) for p in items for j in range(config.n)]
                    bar = _progress(len(keys), sum(k in done for k in keys), f"{name} {mode}", config.progress)
                    correct = [r["correct"] for r in records if r["benchmark"] == name and r["mode"] == mode]

                    def requests():  # sample j of a problem: stream j of the problem seed, whatever runs beside it
                        for problem in items:
                            seed = problem_seed(config.seed, name, problem.problem_id)
                            prompt = None
                            for j in range(config.n):
                                if (name, mode, problem.problem_id, j) in done:
                                    continue
                                prompt = prompt or tuple(_encode(engine.tokenizer, problem.prompt, config.chat_template))
                                yield Request(prompt, request_seed(seed, j), mode, script if mode == "parallel" else None,
                                              (problem.problem_id, j, seed))

                    phase_id = f"{run_id}:{name}:{mode}"
                    start = time.perf_counter()
                    for finished in engine.stream(requests(), sampling, config.concurrency):
                        problem_id, j, seed = finished.request.key
                        record = make_record(config, engine, by_id[problem_id], mode, j, seed, finished.output,
                                             phase_id, time.perf_counter() - start, finished.latency_s, tags, grader)
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                        sink.flush()
                        records.append(record)
                        done.add(_key(record))
                        correct.append(record["correct"])
                        num_new += 1
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(acc=f"{100 * sum(correct) / max(1, len(correct)):.1f}%")
                    if bar is not None:
                        bar.close()
        replay, notes = run_replay(config, records, engine)
    finally:
        if own:
            engine.close()
    return _write(config, build_summary(config, records, num_new, replay, notes))


def _write(config: EvalConfig, summary: dict[str, Any]) -> dict[str, Any]:
    with open(os.path.join(config.output_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    from npr.eval.report import write_report

    write_report(summary, config.output_dir)
    return summary


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("native-parallel-reasoner", "torch", "transformers", "sglang", "datasets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _device(config: EvalConfig) -> str:
    if config.engine == "http":
        return f"server at {config.url}"
    try:
        import torch

        if (config.device or "").startswith("cuda") or (config.device is None and torch.cuda.is_available()):
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the device name is informative only
        pass
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


DEFINITIONS = {
    "trigger_rate": "share of responses with at least one forked block of width >= 2",
    "width": "branches of a forked block (refused forks are not blocks)",
    "critical_path_tokens": "response tokens - sum over blocks of (sum of branch lengths - longest branch): "
                            "the tokens a fork-join engine decodes one after another",
    "time_to_answer_s": "per sample: seconds from handing its request to the engine to its whole response, with "
                        "`concurrency` requests in flight (the reference decoder: the wall time of the decoder "
                        "call it was in); median and p90 over the samples of a benchmark and mode",
    "tokens_per_s": "generated tokens (all branches, forced tokens included; prompts excluded) / wall time of "
                    "the run of that benchmark and mode (first request handed over to last response back)",
    "samples_per_s": "samples / the same wall time",
    "wall_speedup": "sequential wall time / parallel wall time on the problems both modes decoded; the two modes "
                    "decode DIFFERENT responses (of different lengths), so this compares different outputs",
    "replay_speedup": "same outputs: summed time of the sequential reference decoder forced over a parallel "
                      "sample's linearised ids (npr.decoding.sequential_replay) / summed time of the fork-join "
                      "reference decoder decoding it, both at batch 1 with the run's sampling parameters; each "
                      "side the fastest of 3 interleaved timings",
    "token_ratio": "total tokens / critical-path tokens of the replayed samples: the replay speed-up if every "
                   "decoding step cost the same",
}


def build_summary(config: EvalConfig, records: list[dict[str, Any]], num_new: int,
                  replay: list[dict[str, Any]] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """summary.json: settings, versions, per benchmark and mode the metrics, per benchmark the wall-time
    ratio of the two modes and the replay speed-up (see DEFINITIONS)."""
    results: dict[str, dict[str, Any]] = {}
    speedups: dict[str, Any] = {}
    replays: dict[str, Any] = {}
    for spec in config.benchmarks:
        bench = get_benchmark(spec.name)
        by_mode = {m: [r for r in records if r["benchmark"] == spec.name and r["mode"] == m] for m in config.modes}
        results[spec.name] = {m: summarize_samples(rs, config.pass_k) for m, rs in by_mode.items()}
        results[spec.name]["info"] = {"title": bench.title, "answer_type": bench.answer_type, "grader": bench.grader,
                                      "source": spec.source or bench.hub, "reference_avg_at_8": bench.reference_score}
        if "parallel" in by_mode and "sequential" in by_mode:
            speedups[spec.name] = speedup(by_mode["parallel"], by_mode["sequential"])
        replays[spec.name] = replay_summary(r for r in replay or [] if r["benchmark"] == spec.name)
    return {
        "config": config.to_dict(),
        "sampling": {"n": config.n, "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                     "max_new_tokens": config.max_new_tokens, "max_total_tokens": config.max_total_tokens,
                     "max_branches": config.max_branches, "seed": config.seed,
                     "seeding": "sample j of a problem decodes with request seed derive_seed(s, j, 0, 0) mod 2^31, "
                                "s = blake2b(seed:benchmark:problem_id); its sequences use the streams (request "
                                "seed, block, branch), whatever else is in flight"},
        "engine": config.engine, "model": config.model, "device": _device(config), "versions": _versions(),
        "concurrency": config.concurrency,
        "warmup": "one untimed call per mode before the timed ones",
        "num_new_samples": num_new, "results": results, "speedup": speedups, "replay": replays,
        "notes": list(notes or []),
        "definitions": dict(DEFINITIONS),
    }
