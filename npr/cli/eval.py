"""`npr eval`: accuracy, parallelism and speed-up of a model on benchmarks (see recipes/eval/).

Settings come from YAML files (--config, later ones overlay earlier ones) and key=value overrides; every
bad setting, file or engine is reported as `npr eval: error: ...` (exit 2) before the first sample."""

from __future__ import annotations

import argparse
import json

from npr.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file (repeatable; e.g. recipes/eval/eval.yaml then an overlay)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="settings, e.g. model=DIR engine=sglang 'benchmarks=[aime25]' n=4 modes=[parallel]")
    parser.add_argument("--list-benchmarks", action="store_true", help="print the registered benchmarks and exit")


def run(args: argparse.Namespace) -> int:
    from npr.errors import NprError
    from npr.eval import BENCHMARKS, load_config, run_eval

    if args.list_benchmarks:
        for b in BENCHMARKS.values():
            ref = f", original avg@8 {b.reference_score}" if b.reference_score is not None else ""
            print(f"{b.name:14s} {b.title:15s} fields {' | '.join(map(str, b.formats))}; answer {b.answer_type}, "
                  f"grader {b.grader}; hub {b.hub}{ref}")
        return 0
    try:
        config = load_config(args.config, args.overrides)
        summary = run_eval(config)
    except (NprError, ValueError, OSError) as err:
        return fail("eval", str(err))
    print(json.dumps({b: {m: {"avg_at_k": v.get("avg_at_k"), "trigger_rate": v.get("trigger_rate")}
                          for m, v in r.items() if m != "info"} for b, r in summary["results"].items()}))
    print(f"wrote {config.output_dir}/samples.jsonl, summary.json, report.md ({summary['num_new_samples']} new samples)")
    return 0
