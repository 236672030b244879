"""Each phase's evaluation by `npr.eval` on the held-out split (greedy, parallel and sequential modes:
accuracy, trigger rate, widths, critical path), and the wall-clock speed-up of fork-join decoding over a
sequential replay of the same tokens."""

from __future__ import annotations

import os
import time
from typing import Any

from verl_npr.demo.config import MAX_BRANCHES, DemoConfig
from verl_npr.demo.task import BENCHMARK, prompt_ids


def evaluate(cfg: DemoConfig, engine, model_dir: str, test_file: str, name: str, modes: tuple[str, ...],
             max_new: int, n: int = 1, temperature: float = 0.0) -> dict[str, Any]:
    """npr.eval on the held-out split: greedy (n=1, temperature 0) or n samples per problem at `temperature`."""
    from npr.eval import run_eval
    from npr.eval.config import EvalConfig

    ecfg = EvalConfig(benchmarks=({"name": BENCHMARK, "source": test_file},), engine=cfg.engine, model=model_dir,
                      modes=modes, n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new,
                      max_branches=MAX_BRANCHES, seed=cfg.seed, pass_k=(1,),
                      output_dir=os.path.join(cfg.output_dir, "eval", name), dtype="float32", progress=False)
    return run_eval(ecfg, engine=engine)


def metrics_row(name: str, summary: dict, sampled: dict | None = None) -> dict[str, Any]:
    """One report row: greedy accuracy (parallel; sequential when run), trigger rate, widths, tokens,
    critical path; from `sampled` (n samples at temperature 1) the avg@n accuracy and trigger rate."""
    res = summary["results"][BENCHMARK]
    par = res.get("parallel", {})
    row = {"phase": name, "accuracy": par.get("avg_at_k"), "trigger_rate": par.get("trigger_rate"),
           "mean_width": par.get("mean_width"), "tokens": par.get("tokens_per_response"),
           "critical_path": par.get("critical_path_per_response")}
    if "sequential" in res:
        row["sequential_accuracy"] = res["sequential"].get("avg_at_k")
    if sampled is not None:
        spar = sampled["results"][BENCHMARK].get("parallel", {})
        row["sampled_accuracy"], row["sampled_trigger_rate"] = spar.get("avg_at_k"), spar.get("trigger_rate")
    return row


def measure_speedup(model, tokenizer, problems: list[dict], max_new: int) -> dict[str, Any]:
    """Wall-clock speed-up of fork-join decoding over decoding the same tokens sequentially: each problem is
    decoded greedily by the reference fork-join decoder (batch 1), then its linearised ids are replayed
    by the same decoder in sequential mode (ForcedTokens); each side `npr.eval.replay.REPEATS` times,
    interleaved, the fastest kept (timing noise only ever adds time). A trajectory that did not stop by
    itself is skipped. Returns the summed times, their ratio and the ideal ratio (total / critical-path
    tokens)."""
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, sequential_replay
    from npr.eval.replay import REPEATS

    greedy = SamplingParams(temperature=0.0)
    fork_join = Decoder(model, tokenizer, DecodingConfig(max_branches=MAX_BRANCHES, max_new_tokens=max_new))
    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems]
    fork_join.generate(prompts[:1], greedy)  # warm-up, untimed
    fj_s = seq_s = 0.0
    total = critical = count = 0
    for prompt in prompts:
        fj_time = seq_time = float("inf")
        sequential = forced = None
        for _ in range(REPEATS):
            t = time.perf_counter()
            [result] = fork_join.generate([prompt], greedy)
            fj_time = min(fj_time, time.perf_counter() - t)
            if result.finish_reason != "stop":
                break
            if sequential is None:
                sequential, forced = sequential_replay(model, tokenizer, result)
            t = time.perf_counter()
            [replay] = sequential.generate([prompt], greedy, processors=forced)
            seq_time = min(seq_time, time.perf_counter() - t)
            if list(replay.token_ids) != list(result.token_ids):
                raise RuntimeError("the sequential replay decoded other ids than the fork-join trajectory")
        if result.finish_reason != "stop":
            continue
        fj_s, seq_s, count = fj_s + fj_time, seq_s + seq_time, count + 1
        total, critical = total + result.stats["total_tokens"], critical + result.stats["critical_path_tokens"]
    return {"problems": count, "fork_join_s": round(fj_s, 3), "sequential_s": round(seq_s, 3),
            "speedup": seq_s / fj_s if fj_s else None, "ideal": total / critical if critical else None}


def widths_of(folder: str) -> list[list[int]]:
    """The block widths of every parallel-mode sample of an eval folder."""
    from npr.eval.runner import read_samples

    return [r["widths"] for r in read_samples(os.path.join(folder, "samples.jsonl")) if r["mode"] == "parallel"]
