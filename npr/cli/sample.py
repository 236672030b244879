"""`npr sample --data PREPARED.parquet --model PATH --out DIR`: rejection sampling (keep a trajectory only
if it is correct AND its format score is 0) into DIR/records.jsonl (append-only, resumable: rerun the same
command), DIR/sft.parquet (canonical ids of the kept trajectories) and DIR/summary.json. The engine is
the reference fork-join decoder; `--tokenizer` is the prepared Stage-2 tokenizer the SFT ids are for."""

from __future__ import annotations

import argparse
import json
import os
import sys

from npr.cli import CliError, fail
from npr.cli.generate import load, script_spec, parse_script


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared problems (parquet/JSONL from `npr data`)")
    parser.add_argument("--model", required=True, help="the sampling model (Stage 1) folder or hub name")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer with the tags as special tokens for the SFT ids (`npr prepare-model`); "
                             "default: the model's")
    parser.add_argument("--out", required=True, help="output folder (records.jsonl, sft.parquet, summary.json)")
    parser.add_argument("--num-trials", type=int, default=8, help="trials per problem (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="with the problem id, fixes each problem's samples")
    parser.add_argument("--max-new-tokens", type=int, default=4096)
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0 = all)")
    parser.add_argument("--script", type=script_spec, default=None, help="force a structure (tiny models, tests)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def reward_judge(text: str, problem) -> "object":
    """The Stage-2 rule from `reward`: correct (math-verify on the final answer) and format score."""
    from npr.sampling import Verdict
    from reward import format_score, grade

    score, violations = format_score(text)
    return Verdict(grade(text, problem.ground_truth, extra_info=problem.extra_info), score, tuple(violations))


def write_outputs(out: str, summary, rows) -> None:
    import pandas as pd

    pd.DataFrame(rows, columns=["problem_id", "trial", "data_source", "ground_truth", "messages", "prompt_ids",
                                "response_ids"]).to_parquet(os.path.join(out, "sft.parquet"), index=False)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary.as_dict(), f, indent=1)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from npr.decoding import Decoder, DecodingConfig
    from npr.errors import TagTokenError
    from npr.sampling import ReferenceEngine, RejectionSampler, load_problems, sft_rows

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
        model, tokenizer = load(args.model, args.device, args.dtype)
        sft_tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else tokenizer
        decoder = Decoder(model, tokenizer, DecodingConfig(max_new_tokens=args.max_new_tokens))
        sampler = RejectionSampler(ReferenceEngine(decoder, args.temperature, parse_script(args.script)),
                                   reward_judge, tokenizer, args.num_trials, args.seed)
        from npr.templates import Templates

        Templates.from_tokenizer(sft_tokenizer)  # refuse early when the SFT tokenizer lacks the tags
    except (CliError, TagTokenError, OSError) as err:
        return fail("sample", str(err))
    os.makedirs(args.out, exist_ok=True)
    records = os.path.join(args.out, "records.jsonl")
    summary = sampler.run(problems, records, progress=not args.quiet)
    rows = sft_rows(records, sft_tokenizer, [p.problem_id for p in problems], summary)
    for note in summary.notes + [f"dropped (invalid layout): {d}" for d in summary.dropped]:
        print(f"npr sample: {note}", file=sys.stderr)
    write_outputs(args.out, summary, rows)
    print(json.dumps(summary.as_dict()))
    return 0
