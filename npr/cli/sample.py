"""`npr sample --data PREPARED.parquet --model PATH --out DIR`: rejection sampling (keep a trajectory only
if it is correct AND its format score is 0) into DIR/records.jsonl (append-only, one line per trial,
resumable: rerun the same command), DIR/sft.parquet (canonical ids of the kept trajectories) and
DIR/summary.json. `--engine`: the reference fork-join decoder, SGLang's in-process Engine (`sglang`) or a
running SGLang server (`server`, with `--url`); `--concurrency` trials are in flight at once.
`--tokenizer` is the prepared Stage-2 tokenizer the SFT ids are for."""

from __future__ import annotations

import argparse
import json
import os
import sys

from npr.cli import CliError, fail
from npr.loading import parse_script, script_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="prepared problems (parquet/JSONL from `npr data`), or a folder of them")
    parser.add_argument("--model", required=True,
                        help="the sampling model (Stage 1) folder or hub name (engine server: its tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer with the tags as special tokens for the SFT ids (`npr prepare-model`); "
                             "default: the model's")
    parser.add_argument("--out", required=True, help="output folder (records.jsonl, sft.parquet, summary.json)")
    parser.add_argument("--engine", default="reference",
                        help="reference (default) | sglang (in-process sglang.Engine) | server (an SGLang server "
                             "at --url); engines come from the npr.engines entry points")
    parser.add_argument("--url", default=None, help="engine server: http://HOST:PORT of the SGLang server")
    parser.add_argument("--engine-args", type=json.loads, default={},
                        help='engine sglang: sglang.Engine keyword arguments as JSON, e.g. \'{"attention_backend": "npr"}\'')
    parser.add_argument("--concurrency", type=int, default=32,
                        help="trials in flight at once (the reference decoder: per decoder call; default 32)")
    parser.add_argument("--num-trials", type=int, default=8, help="trials per problem (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="with the problem id, fixes each problem's samples")
    parser.add_argument("--max-new-tokens", type=int, default=4096)
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0 = all)")
    parser.add_argument("--script", type=script_spec, default=None, help="force a structure (tiny models, tests)")
    parser.add_argument("--grader", default="reward",
                        help="the grader judging correctness and format (a name in npr.graders, or module:attr)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def reward_judge(text: str, problem) -> "object":
    """The Stage-2 rule with the registered "reward" grader (kept for callers of the old name)."""
    from npr.graders import load_grader
    from npr.rejection import make_judge

    return make_judge(load_grader("reward"))(text, problem)


def write_outputs(out: str, summary, rows) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=["problem_id", "trial", "data_source", "ground_truth", "messages", "prompt_ids",
                                "response_ids"]).to_parquet(os.path.join(out, "sft.parquet"), index=False)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary.as_dict(), f, indent=1)


def make_sampler(args: argparse.Namespace):
    """(engine, sampler) of the command line; raises CliError / NprError for a bad option."""
    from npr.eval.engines import Sampling, make_engine
    from npr.graders import load_grader
    from npr.rejection import RejectionSampler, make_judge

    if args.concurrency < 1:
        raise CliError(f"--concurrency {args.concurrency}: must be >= 1")
    if not isinstance(args.engine_args, dict):
        raise CliError(f"--engine-args {args.engine_args!r}: expected a JSON object")
    script = parse_script(args.script)
    grader = load_grader(args.grader)
    engine = make_engine(args.engine, model=args.model, url=args.url, device=args.device, dtype=args.dtype,
                         engine_args=args.engine_args)
    try:
        engine.check("parallel")
        sampling = Sampling(temperature=args.temperature, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
        sampler = RejectionSampler(engine, make_judge(grader), engine.tokenizer, args.num_trials, args.seed,
                                   args.concurrency, sampling, script.branch_lengths if script else None)
    except BaseException:
        engine.close()
        raise
    return engine, sampler


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from npr.errors import NprError
    from npr.rejection import load_problems, sft_rows

    if args.num_trials < 1:
        return fail("sample", f"--num-trials {args.num_trials}: must be >= 1")
    try:
        problems, skipped = load_problems(args.data)
    except (OSError, ValueError) as err:
        return fail("sample", f"--data {args.data!r}: {err}")
    for index, reason in skipped:
        print(f"npr sample: skipped row {index}: {reason}", file=sys.stderr)
    if args.limit:
        problems = problems[: args.limit]
    try:
        engine, sampler = make_sampler(args)
    except (NprError, ValueError, OSError) as err:
        return fail("sample", str(err))
    try:
        from npr.templates import Templates

        sft_tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else engine.tokenizer
        Templates.from_tokenizer(sft_tokenizer)  # refuse early when the SFT tokenizer lacks the tags
        os.makedirs(args.out, exist_ok=True)
        records = os.path.join(args.out, "records.jsonl")
        summary = sampler.run(problems, records, progress=not args.quiet)
    except (NprError, ValueError, OSError) as err:
        return fail("sample", str(err))
    finally:
        engine.close()
    rows = sft_rows(records, sft_tokenizer, [p.problem_id for p in problems], summary)
    for note in summary.notes + [f"dropped (invalid layout): {d}" for d in summary.dropped]:
        print(f"npr sample: {note}", file=sys.stderr)
    write_outputs(args.out, summary, rows)
    print(json.dumps(summary.as_dict()))
    return 0
