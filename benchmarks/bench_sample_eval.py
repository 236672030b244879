"""Samples/s of `npr sample` (RejectionSampler) and `npr eval` (run_eval, parallel mode) at concurrency
1 vs 8 vs 32, side by side in one run, on SGLang's in-process Engine with the NPR plugin and on the
reference decoder, on the tiny model (CPU). The workload: sampled fork-join trajectories under a script
(one block of 2 branches, temperature 1). Optionally (--replay N) the eval's replay speed-up of N parallel
samples at batch 1 on the reference decoder, beside their token ratio total / critical-path tokens.

samples/s: trials (sample) or samples (eval) / the wall time from the first request handed to the engine
to the last response back. Rows go to benchmarks/results/sample_eval.csv with device, versions, git sha.
  nice -n 10 python benchmarks/bench_sample_eval.py                       # CPU, tiny model
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append_rows, cpu_device, dist_version, git_sha  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sample_eval.csv"
SCRIPT = "4,4"
REPLAY_SCRIPT = "24,24,24,24"  # the replay case: one block of 4 branches of 24 tokens
SGLANG_CPU = dict(attention_backend="npr", device="cpu", disable_cuda_graph=True,
                  dtype="float32", mem_fraction_static=0.3, max_total_tokens=16384, max_running_requests=64,
                  log_level="error", random_seed=0)


class AnyJudge:
    """The benchmark's judge: keeps nothing (the tiny model answers nothing right); only the speed counts."""

    @staticmethod
    def grade(text, reference, *, extra_info=None):
        return False

    @staticmethod
    def format_score(text, max_branches=5):
        return 0.0, []

    @staticmethod
    def extract_answer(text):
        from reward import extract_answer

        return extract_answer(text)


def setup_case(root: Path, num_problems: int):
    """The shared workload: a tiny model, prepared problems for `npr sample`, an AIME-style file for eval."""
    from npr.data import convert, write_parquet
    from npr.rejection import load_problems
    from npr.tiny import save_tiny

    model = save_tiny(root / "tiny", seed=0)
    rows = [{"question": f"What is {i} + {2 * i}?", "answer": str(3 * i)} for i in range(num_problems)]
    write_parquet(convert(rows, "toy", instruction=None).rows, root / "problems.parquet")
    problems, _ = load_problems(str(root / "problems.parquet"))
    with open(root / "aime.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return model, problems, str(root / "aime.jsonl")


def run_sample(engine, problems, out: Path, concurrency: int, num_trials: int, max_new: int) -> dict:
    from npr.eval.engines import Sampling
    from npr.loading import parse_script
    from npr.rejection import RejectionSampler, make_judge

    sampler = RejectionSampler(engine, make_judge(AnyJudge()), engine.tokenizer, num_trials, 0, concurrency,
                               Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new),
                               parse_script(SCRIPT).branch_lengths)
    summary = sampler.run(problems, str(out / "records.jsonl"), progress=False)
    return {"num_samples": summary.num_new_trials, "wall_s": summary.wall_s, "samples_per_s": summary.samples_per_s}


def run_evaluation(engine, source: str, model: str, out: Path, concurrency: int, num_trials: int, max_new: int,
                   replay: int = 0, script: str = SCRIPT) -> dict:
    from npr.eval import EvalConfig, run_eval

    config = EvalConfig(benchmarks=[{"name": "aime25", "source": source}], engine=engine.name, model=model,
                        device="cpu", dtype="float32", modes=("parallel",), n=num_trials, temperature=1.0,
                        top_p=1.0, max_new_tokens=max_new, script=script, pass_k=(1,), concurrency=concurrency,
                        output_dir=str(out), progress=False, replay=replay)
    summary = run_eval(config, engine=engine, grader=JUDGE)
    m = summary["results"]["aime25"]["parallel"]
    return {"num_samples": m["num_samples"], "wall_s": m["wall_s"], "samples_per_s": m["samples_per_s"],
            "tokens_per_s": m["tokens_per_s"], "replay": summary["replay"]["aime25"]}


JUDGE = AnyJudge()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-problems", type=int, default=16)
    parser.add_argument("--num-trials", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--engines", nargs="+", default=["sglang", "reference"], choices=["sglang", "reference"])
    parser.add_argument("--replay", type=int, default=4, help="parallel samples timed against their replay (0: off)")
    parser.add_argument("--device-name", default=None, help="the device column (default: the CPU's name)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    import torch

    from npr.eval.engines import ReferenceEngine, engine_class

    root = Path(tempfile.mkdtemp(prefix="bench_sample_eval_"))
    model, problems, source = setup_case(root, args.num_problems)
    env = {"device": args.device_name or cpu_device(), "torch": torch.__version__,
           "transformers": dist_version("transformers"), "sglang": dist_version("sglang"), "git_sha": git_sha(),
           "date": datetime.date.today().isoformat(), "model": "tiny", "script": SCRIPT,
           "max_new_tokens": args.max_new_tokens}
    rows = []
    print(f"# {env['device']}  {args.num_problems} problems x {args.num_trials} samples, script {SCRIPT}, "
          f"temperature 1")
    print(f"{'engine':>9} {'command':>7} {'conc':>4} {'samples':>7} {'wall s':>8} {'samples/s':>9} {'vs c1':>6}")
    for name in args.engines:
        start = time.perf_counter()
        engine = ReferenceEngine(model, "cpu", "float32") if name == "reference" else engine_class("sglang")(model, **SGLANG_CPU)
        print(f"# {name} engine started in {time.perf_counter() - start:.1f} s")
        try:
            warm = root / f"{name}-warm"  # one untimed pass: kernels, allocations
            run_sample(engine, problems[:2], warm, 2, 1, args.max_new_tokens)
            base: dict[str, float] = {}
            for c in args.concurrency:
                for command in ("sample", "eval"):
                    out = root / f"{name}-{command}-c{c}"
                    if command == "sample":
                        m = run_sample(engine, problems, out, c, args.num_trials, args.max_new_tokens)
                    else:
                        m = run_evaluation(engine, source, model, out, c, args.num_trials, args.max_new_tokens)
                    base.setdefault(command, m["samples_per_s"])
                    ratio = m["samples_per_s"] / base[command]
                    print(f"{name:>9} {command:>7} {c:>4} {m['num_samples']:>7} {m['wall_s']:>8.2f} "
                          f"{m['samples_per_s']:>9.2f} {ratio:>6.2f}")
                    rows.append(dict(env, engine=name, command=command, concurrency=c, num_samples=m["num_samples"],
                                     wall_s=round(m["wall_s"], 3), samples_per_s=round(m["samples_per_s"], 3),
                                     speedup_vs_c1=round(ratio, 3), replay_speedup="", token_ratio=""))
            if name == "reference" and args.replay:
                m = run_evaluation(engine, source, model, root / "replay", 1, 1, 160, args.replay, REPLAY_SCRIPT)
                rp = m["replay"]
                print(f"# replay at batch 1 (reference, script {REPLAY_SCRIPT}, {rp['num_samples']} samples): speed-up "
                      f"{rp['replay_speedup']:.2f}x, token ratio {rp['token_ratio']:.2f}x "
                      f"({rp['replay_speedup'] / rp['token_ratio']:.0%} of it)")
                rows.append(dict(env, engine=name, command="eval-replay", concurrency=1, num_samples=rp["num_samples"],
                                 wall_s=round(rp["fork_join_s"] + rp["sequential_s"], 3), samples_per_s="",
                                 speedup_vs_c1="", replay_speedup=round(rp["replay_speedup"], 3),
                                 token_ratio=round(rp["token_ratio"], 3)))
        finally:
            engine.close()
    if not args.no_save:
        append_rows(RESULTS, rows)


if __name__ == "__main__":
    main()
