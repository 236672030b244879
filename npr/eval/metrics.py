"""Evaluation metrics: avg@k, unbiased pass@k, the parallel trigger rate, widths, critical paths,
tokens/s and the wall-clock speed-up of parallel over sequential decoding. Pure Python except
`structure_of`, which reads a trajectory's layout (torch).

Definitions (also in the README):
* width of a forked block = its number of branches (parallel steps the engine actually decoded; a fork
  the engine refused is not a block, it went on sequentially);
* a response *triggers* parallelism when it has at least one forked block of width >= 2; the parallel
  trigger rate = triggered responses / all responses (every sample counts, finished or not);
* critical-path tokens = response tokens - sum over blocks of (sum of branch lengths - longest branch):
  the tokens a fork-join engine must decode one after another (DESIGN §4, the "max" convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), the chance that k of n samples
    drawn without replacement hold at least one of the c correct ones. Raises ValueError unless
    0 <= c <= n and 1 <= k <= n."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n (k samples out of n), got n={n}, k={k}")
    if n - c < k:
        return 1.0
    # product form: stable for large n
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean correctness of the samples of one problem (avg@k with k = len(correct))."""
    if not correct:
        raise ValueError("avg_at_k: no samples")
    return sum(bool(x) for x in correct) / len(correct)


@dataclass(frozen=True)
class Structure:
    """Per-response structure: widths of its forked blocks, tokens in all and on the critical path."""

    widths: tuple[int, ...]
    total_tokens: int
    critical_path_tokens: int

    @property
    def is_triggered(self) -> bool:
        return any(w >= 2 for w in self.widths)

    @property
    def max_width(self) -> int:
        return max(self.widths, default=1)


def structure_from_spans(num_response_tokens: int, spans: Sequence[Sequence[tuple[int, int]]]) -> Structure:
    """Structure from per-block branch spans ([start, end) token offsets, as `Layout.branch_spans`)."""
    saved = sum(sum(b - a for a, b in block) - max((b - a for a, b in block), default=0) for block in spans)
    return Structure(tuple(len(block) for block in spans), num_response_tokens, num_response_tokens - saved)


def structure_of(trajectory, tags, max_branches: int | None = None) -> Structure:
    """The Structure of a `npr.forkjoin.Trajectory`, from its layout (refused forks stay sequential)."""
    layout = trajectory.layout(tags, max_branches)
    return structure_from_spans(len(trajectory.token_ids), layout.branch_spans())


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) of `values`, linear between order statistics; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    at = q * (len(ordered) - 1)
    low = int(math.floor(at))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def phase_walls(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Wall time of each phase (the samples of one benchmark and mode decoded in one run, concurrently):
    the latest `phase_elapsed_s` of its records. Records of older runs carry `batch_id`/`batch_wall_s`
    (one engine call per problem) and count each batch once."""
    walls: dict[str, float] = {}
    for r in records:
        if "phase_id" in r:
            key, wall = str(r["phase_id"]), float(r["phase_elapsed_s"])
        else:
            key, wall = str(r["batch_id"]), float(r["batch_wall_s"])
        walls[key] = max(walls.get(key, 0.0), wall)
    return walls


def summarize_samples(records: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Aggregate per-sample records (one benchmark, one mode) into the summary's metrics.

    A record holds: problem_id, correct, format_score, widths, total_tokens, critical_path_tokens, and its
    timing: phase_id, phase_elapsed_s, latency_s, concurrency (older records: batch_id, batch_wall_s)."""
    records = list(records)
    if not records:
        return {"num_samples": 0}
    by_problem: dict[str, list[bool]] = {}
    for r in records:
        by_problem.setdefault(str(r["problem_id"]), []).append(bool(r["correct"]))
    n_min = min(len(v) for v in by_problem.values())
    widths = [w for r in records for w in r["widths"]]
    wall = sum(phase_walls(records).values())
    total = sum(int(r["total_tokens"]) for r in records)
    latencies = [float(r["latency_s"]) for r in records if r.get("latency_s") is not None]
    concurrency = sorted({int(r["concurrency"]) for r in records if r.get("concurrency") is not None})
    out: dict[str, Any] = {
        "num_problems": len(by_problem),
        "num_samples": len(records),
        "samples_per_problem": n_min,
        "avg_at_k": _mean([avg_at_k(v) for v in by_problem.values()]),
        "pass_at_k": {str(k): _mean([pass_at_k(len(v), sum(v), k) for v in by_problem.values()])
                      for k in ks if 1 <= k <= n_min},
        "format_score": _mean([float(r["format_score"]) for r in records]),
        "format_perfect_rate": _mean([float(r["format_score"]) == 0.0 for r in records]),
        "trigger_rate": _mean([any(w >= 2 for w in r["widths"]) for r in records]),
        "mean_width": _mean(widths),
        "max_width": max(widths, default=1),
        "width_histogram": {str(w): widths.count(w) for w in sorted(set(widths))},
        "blocks_per_response": _mean([len(r["widths"]) for r in records]),
        "tokens_per_response": _mean([int(r["total_tokens"]) for r in records]),
        "critical_path_per_response": _mean([int(r["critical_path_tokens"]) for r in records]),
        "finish_reasons": {},
        "wall_s": wall,
        "tokens_per_s": total / wall if wall > 0 else None,
        "samples_per_s": len(records) / wall if wall > 0 else None,
        "concurrency": concurrency[0] if len(concurrency) == 1 else concurrency,
        "time_to_answer_s": {"median": quantile(latencies, 0.5), "p90": quantile(latencies, 0.9)},
    }
    for r in records:
        reason = r.get("finish_reason", "?")
        out["finish_reasons"][reason] = out["finish_reasons"].get(reason, 0) + 1
    return out


def speedup(parallel: Sequence[Mapping[str, Any]], sequential: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Wall-clock ratio of the sequential to the parallel run on the problems both modes finished (same
    engine): sequential wall time / parallel wall time, with the tokens/s of each side. The two runs
    decode DIFFERENT responses (a sequential response is not the parallel one written out), so this
    compares different outputs; the same-output speed-up is the replay's (`replay_summary`). None when
    no problem was decoded in both modes."""
    par_ids = {str(r["problem_id"]) for r in parallel}
    common = par_ids & {str(r["problem_id"]) for r in sequential}
    if not common:
        return None
    par = [r for r in parallel if str(r["problem_id"]) in common]
    seq = [r for r in sequential if str(r["problem_id"]) in common]
    par_wall, seq_wall = sum(phase_walls(par).values()), sum(phase_walls(seq).values())
    tokens = lambda recs: sum(int(r["total_tokens"]) for r in recs)  # noqa: E731
    return {
        "num_problems": len(common),
        "parallel_wall_s": par_wall,
        "sequential_wall_s": seq_wall,
        "wall_speedup": seq_wall / par_wall if par_wall > 0 else None,
        "parallel_tokens_per_s": tokens(par) / par_wall if par_wall > 0 else None,
        "sequential_tokens_per_s": tokens(seq) / seq_wall if seq_wall > 0 else None,
        "parallel_tokens_per_response": tokens(par) / len(par),
        "sequential_tokens_per_response": tokens(seq) / len(seq),
    }


def replay_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The same-output fork-join speed-up from replay rows (fork_join_s, sequential_s, total_tokens,
    critical_path_tokens of one trajectory, both at batch 1): summed sequential replay time / summed
    fork-join time, beside the token ratio total / critical-path tokens it is bounded by. None when empty."""
    rows = list(rows)
    if not rows:
        return None
    fj, seq = sum(float(r["fork_join_s"]) for r in rows), sum(float(r["sequential_s"]) for r in rows)
    total, critical = sum(int(r["total_tokens"]) for r in rows), sum(int(r["critical_path_tokens"]) for r in rows)
    return {"num_samples": len(rows), "fork_join_s": fj, "sequential_s": seq,
            "replay_speedup": seq / fj if fj > 0 else None,
            "token_ratio": total / critical if critical else None}
