"""Fork-join inside sglang.Engine (backend "npr") at serving batch sizes, against stock SGLang decoding
in the same engine, same run. Each case (batch B, width W: one block of W scripted branches of L tokens
after a P-token prompt) runs three workloads, each after a cache flush:

  npr         B fork-join requests (greedy, scripted)
  same_tokens B plain requests, each decoding as many tokens as its fork-join trajectory (ignore_eos):
              the sequential answer to the same question (end-to-end ratio, prompt prefill)
  same_rows   plain requests with the fork-join run's mean rows per decode forward, for as many decode
              steps: what a stock decode step costs with the same number of rows

and reads the scheduler's counters (`sglang_npr.engine.counters`, via get_server_info) around each:
  forwards_per_batch   TP-worker forwards per scheduler batch (the design: exactly 1)
  rows_per_forward     decode rows per decode forward (SGLang's + NPR's)
  prefill_ratio        extend time of the NPR prompts / of the same prompts as stock requests
  host_ms_per_step     scheduler time of a decode batch outside the model forward (run_batch +
                       process_batch_result - forward), NPR vs same_rows
  step_cost_ratio      scheduler time per decode batch, NPR / same_rows
  speedup              wall time same_tokens / npr; ideal = total / critical-path tokens; of_ideal = ratio
  sched_speedup        the same from scheduler busy time (the issue's figure); sched_of_ideal its ratio to ideal
  row_bound            ideal x (stock ms per step of same_tokens / of same_rows): the speed-up a fork-join
                       with zero overhead would reach here, where a decode step's cost grows with its rows
                       (torch_native attends row by row on CPU); sched_of_row_bound = sched_speedup / it
Scheduler figures use the scheduler process's CPU time by default (--clock cpu), which other work on a
shared machine disturbs far less than wall time; speedup / of_ideal are wall time, end to end.

Rows go to benchmarks/results/sglang_forkjoin_scale.csv (device, versions, git sha, date). Timings are
medians of --repeats runs.
  python benchmarks/bench_sglang_forkjoin.py                       # CPU, tiny model, overlap scheduler on
  python benchmarks/bench_sglang_forkjoin.py --disable-overlap-schedule --batches 8
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append_rows, cpu_device, git_sha  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sglang_forkjoin_scale.csv"


def counters(engine) -> dict:
    states = engine.get_server_info()["internal_states"]
    return dict(states[0]["npr"])


def measured(engine, fn) -> tuple[float, dict, object]:
    """Wall time of fn(), the counters' change over it, fn's result (after a cache flush)."""
    engine.flush_cache()
    before = counters(engine)
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    after = counters(engine)
    return wall, {k: after[k] - before[k] for k in after}, out


def prompts_for(batch: int, length: int, salt: int) -> list[list[int]]:
    return [[(7 * i + 13 * j + salt) % 290 + 5 for j in range(length)] for i in range(batch)]


def per_step(delta: dict, clock: str) -> tuple[float, float]:
    """(scheduler ms per decode batch, of it outside the forward) for one run's counters."""
    steps = max(delta["decode_forwards"], 1)
    busy, forward = delta[f"decode_busy{clock}"], delta[f"decode_forward{clock}"]
    return 1e3 * busy / steps, 1e3 * (busy - forward) / steps


def run_case(engine, args, batch: int, width: int, salt: int) -> dict:
    clock = "_cpu_s" if args.clock == "cpu" else "_s"
    from sglang_npr.client import npr_sampling_params

    prompts = prompts_for(batch, args.prompt_len, salt)
    script = [[args.branch_len] * width]
    budget = width * (args.branch_len + 8) + 64
    params = npr_sampling_params({"max_new_tokens": budget, "temperature": 0.0}, script=script,
                                 max_branches=max(width, 1), max_total_tokens=budget)
    wall, npr, outs = measured(engine, lambda: engine.generate(input_ids=prompts, sampling_params=params))
    stats = [o["meta_info"]["npr"]["stats"] for o in outs]
    totals = [s["total_tokens"] for s in stats]
    plain = [{"max_new_tokens": t, "temperature": 0.0, "ignore_eos": True} for t in totals]
    wall_seq, seq, _ = measured(engine, lambda: engine.generate(input_ids=prompts, sampling_params=plain))
    steps = npr["decode_forwards"]
    rows = max(1, round(npr["decode_rows"] / max(steps, 1)))
    same = {"max_new_tokens": steps, "temperature": 0.0, "ignore_eos": True}
    _, rows_run, _ = measured(engine, lambda: engine.generate(input_ids=prompts_for(rows, args.prompt_len, salt + 1),
                                                              sampling_params=[same] * rows))
    step_ms, host_ms = per_step(npr, clock)
    stock_step_ms, stock_host_ms = per_step(rows_run, clock)
    seq_step_ms, _ = per_step(seq, clock)
    total, critical = sum(totals), sum(s["critical_path_tokens"] for s in stats)
    ideal = total / critical
    sched_speedup = (seq[f"decode_busy{clock}"] + seq[f"extend_busy{clock}"]) \
        / (npr[f"decode_busy{clock}"] + npr[f"extend_busy{clock}"])
    # what stock itself allows: a decode step with the fork-join run's rows costs stock_step_ms, one
    # with the sequential run's rows seq_step_ms, so even a free fork-join reaches ideal * their ratio
    row_bound = ideal * seq_step_ms / stock_step_ms
    return {
        "forwards_per_batch": npr["forwards"] / max(npr["batches"], 1),
        "rows_per_forward": npr["decode_rows"] / max(steps, 1),
        "stock_rows_per_forward": rows_run["decode_rows"] / max(rows_run["decode_forwards"], 1),
        "npr_prefill_s": npr[f"extend_busy{clock}"], "stock_prefill_s": seq[f"extend_busy{clock}"],
        "prefill_ratio": npr[f"extend_busy{clock}"] / max(seq[f"extend_busy{clock}"], 1e-9),
        "prefill_forwards": npr["extend_forwards"], "stock_prefill_forwards": seq["extend_forwards"],
        "step_ms": step_ms, "stock_step_ms": stock_step_ms, "step_cost_ratio": step_ms / stock_step_ms,
        "host_ms_per_step": host_ms, "stock_host_ms_per_step": stock_host_ms,
        "host_ratio": host_ms / max(stock_host_ms, 1e-9),
        "npr_host_ms_per_step": 1e3 * npr[f"npr_host{clock}"] / max(steps, 1),
        "total_tokens": total, "critical_path_tokens": critical, "ideal": ideal,
        "wall_s": wall, "sequential_wall_s": wall_seq, "speedup": wall_seq / wall, "of_ideal": wall_seq / wall / ideal,
        "sched_speedup": sched_speedup, "sched_of_ideal": sched_speedup / ideal,
        "seq_step_ms": seq_step_ms, "row_bound": row_bound, "sched_of_row_bound": sched_speedup / row_bound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--branch-len", type=int, default=32)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--disable-overlap-schedule", action="store_true")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="scheduler figures from the scheduler process's CPU time (default; robust to other "
                             "work on the machine) or wall time")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the scheduler (OMP_NUM_THREADS); with 1, its CPU time is its work")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import sglang
    import torch
    import transformers

    from npr.tiny import save_tiny

    path = save_tiny(tempfile.mkdtemp(prefix="npr-bench-"))
    engine = sglang.Engine(model_path=path, device="cpu", attention_backend="npr", disable_cuda_graph=True,
                           dtype="float32", mem_fraction_static=0.3, max_total_tokens=65536, max_running_requests=256,
                           disable_overlap_schedule=args.disable_overlap_schedule, log_level="error", random_seed=0)
    rows = []
    device = cpu_device()
    try:
        run_case(engine, args, 2, 2, salt=999)  # warm-up
        for batch in args.batches:
            for width in args.widths:
                runs = [run_case(engine, args, batch, width, salt=r) for r in range(args.repeats)]
                result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append({
                    "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
                    "sglang": sglang.__version__, "git_sha": git_sha(), "date": datetime.date.today().isoformat(),
                    "model": "tiny", "overlap": not args.disable_overlap_schedule, "clock": args.clock, "threads": args.threads, "prompt_len": args.prompt_len,
                    "branch_len": args.branch_len, "batch": batch, "width": width, "repeats": args.repeats,
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}})
                r = result
                print(f"batch {batch:2d} width {width}: fwd/batch {r['forwards_per_batch']:.2f}, rows/fwd "
                      f"{r['rows_per_forward']:.1f}, prefill x{r['prefill_ratio']:.2f}, step x{r['step_cost_ratio']:.2f} "
                      f"({r['step_ms']:.1f} vs {r['stock_step_ms']:.1f} ms), host x{r['host_ratio']:.2f} "
                      f"({r['host_ms_per_step']:.2f} vs {r['stock_host_ms_per_step']:.2f} ms), speed-up "
                      f"{r['speedup']:.2f} of ideal {r['ideal']:.2f} ({r['of_ideal']:.2f}), sched {r['sched_speedup']:.2f} "
                      f"({r['sched_of_ideal']:.2f}; {r['sched_of_row_bound']:.2f} of stock's row bound "
                      f"{r['row_bound']:.2f})",
                      flush=True)
    finally:
        engine.shutdown()
    if not args.no_save:
        append_rows(RESULTS, rows)


if __name__ == "__main__":
    main()
