"""Fork-join inside sglang.Engine (backend "npr") vs SGLang's own sequential decoding of the same number
of tokens (a plain request, ignore_eos, max_new_tokens = the trajectory's total tokens), same engine,
same run, for scripted workloads (n branches of L tokens) at a few batch sizes.

Rows go to benchmarks/results/sglang_forkjoin.csv with device, versions, git sha, date, median/p20/p80.
  python benchmarks/bench_sglang_forkjoin.py                  # CPU, tiny model, torch_native inside npr
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append_rows, git_sha, quantiles  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sglang_forkjoin.csv"


def setup_case(args, width: int, batch: int):
    """The shared workload of one case: prompts and NPR sampling params (one block of `width` branches)."""
    from sglang_npr.client import npr_sampling_params

    prompts = [[(7 * i + j) % 300 + 3 for j in range(args.prefix)] for i in range(batch)]
    script = [[args.branch_len] * width]
    params = npr_sampling_params({"max_new_tokens": args.branch_len + 64, "temperature": 0.0}, script=script,
                                 max_branches=max(width, 1), max_total_tokens=width * (args.branch_len + 8) + 64)
    return prompts, params


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=int, default=16)
    parser.add_argument("--branch-len", type=int, default=24)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    import sglang
    import torch
    import transformers

    from npr.tiny import save_tiny

    path = save_tiny(tempfile.mkdtemp(prefix="npr-bench-"))
    engine = sglang.Engine(model_path=path, device="cpu", attention_backend="npr", disable_cuda_graph=True,
                           dtype="float32", mem_fraction_static=0.3, max_total_tokens=32768, max_running_requests=64,
                           disable_overlap_schedule=True, log_level="error", random_seed=0)
    rows = []
    try:
        for batch in args.batches:
            for width in args.widths:
                prompts, params = setup_case(args, width, batch)
                engine.generate(input_ids=prompts, sampling_params=params)  # warm-up
                fj_times, outs = timed(lambda: engine.generate(input_ids=prompts, sampling_params=params), args.repeats)
                stats = [o["meta_info"]["npr"]["stats"] for o in outs]
                totals = [s["total_tokens"] for s in stats]
                plain = [{"max_new_tokens": t, "temperature": 0.0, "ignore_eos": True} for t in totals]
                seq_times, _ = timed(lambda: engine.generate(input_ids=prompts, sampling_params=plain), args.repeats)
                total, critical = sum(totals), sum(s["critical_path_tokens"] for s in stats)
                fj, seq = quantiles(fj_times), quantiles(seq_times)
                for provider, (median, p20, p80) in (("fork_join_npr", fj), ("sequential_sglang", seq)):
                    rows.append({
                        "device": "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
                        "sglang": sglang.__version__, "git_sha": git_sha(), "date": datetime.date.today().isoformat(),
                        "model": "tiny", "prefix": args.prefix, "width": width, "branch_len": args.branch_len,
                        "batch": batch, "total_tokens": total, "critical_path_tokens": critical, "provider": provider,
                        "median_s": round(median, 4), "p20_s": round(p20, 4), "p80_s": round(p80, 4),
                        "tokens_per_s": round(total / median, 1), "speedup_vs_sequential": round(seq[0] / median, 3)})
                print(f"batch {batch} width {width}: {total} tokens, fork-join {fj[0]:.3f}s, sequential {seq[0]:.3f}s, "
                      f"ratio {seq[0] / fj[0]:.2f}")
    finally:
        engine.shutdown()
    if not args.no_save:
        append_rows(RESULTS, rows)


if __name__ == "__main__":
    main()
