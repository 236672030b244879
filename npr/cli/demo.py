"""`npr demo`: the whole NPR pipeline in miniature on a CPU (`verl_npr.demo`: synthetic task, tiny
prepared model, an "instruct" prelude, Stage 1, self-distilled Stage 2 and Stage 3 through verl's actor,
evaluation by npr.eval); needs verl.
`npr demo --quick`: no host needed. Builds a tiny random model and tokenizer in memory, decodes a
scripted fork-join trajectory, prints its tree, and checks train/inference consistency: the
decoder's log-probs against one structured forward over the linearised trajectory."""

from __future__ import annotations

import argparse
import json
import sys

from npr.loading import script_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="only the consistency check on a random model (no verl needed; --script/--prompt/--json)")
    parser.add_argument("--fast", action="store_true",
                        help="the pipeline at test-suite size (shorter problems, fewer steps; about 2 min)")
    parser.add_argument("--engine", choices=["reference", "sglang"], default="reference",
                        help="the fork-join engine of the evaluations, the RL rollouts and Stage 2's sampling")
    parser.add_argument("--output-dir", default="out/demo")
    parser.add_argument("--instruct-steps", type=int, default=None, help="phase-0 SFT updates (default 300; --fast 150)")
    parser.add_argument("--stage1-steps", type=int, default=None, help="Stage-1 GRPO updates (default 12; --fast 6)")
    parser.add_argument("--sft-steps", type=int, default=None, help="Stage-2 SFT updates (default 100; --fast 60)")
    parser.add_argument("--papo-steps", type=int, default=None, help="Stage-3 PAPO updates (default 16; --fast 8)")
    parser.add_argument("--script", type=script_spec, default="3,5/4,4,6",
                        help="branch lengths per block, e.g. '3,5/4,4,6'; '' decodes without a script")
    parser.add_argument("--prompt", default="What is 6 times 7? Think in parallel.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")


def describe_script(spec: str) -> str:
    if spec.strip():
        return f"structure forced by the script {spec.strip()!r}"
    return "no script: the random model decodes freely (it rarely writes a tag, so expect no fork)"


PIPELINE_GROUP = "npr.pipelines"


def load_pipeline(name: str = "demo"):
    """The host plugin's pipeline module, found through the `npr.pipelines` entry points (so `npr` imports no
    host plugin by name). Raises ImportError, with the fix, when it or its host is missing."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=PIPELINE_GROUP) if ep.name == name]
    if not found:
        raise ImportError(f"no '{name}' entry point in group {PIPELINE_GROUP} (reinstall the package: pip install -e .)")
    return found[0].load()


def run(args: argparse.Namespace) -> int:
    if args.quick:
        return run_quick(args)
    try:
        pipeline = load_pipeline()
        pipeline.setup_env()  # verl's platform is chosen on its first import
        pipeline.quiet_hosts()
        import verl  # noqa: F401
    except ImportError as err:
        print(f"npr demo: the pipeline needs verl ({err}); run `bash scripts/demo.sh` (it builds the pinned "
              "environment with scripts/setup_env.sh), or `npr demo --quick` for the consistency check alone",
              file=sys.stderr)
        return 2
    kwargs = dict(pipeline.FAST) if args.fast else {}
    for name in ("instruct_steps", "stage1_steps", "sft_steps", "papo_steps"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    try:
        config = pipeline.DemoConfig(output_dir=args.output_dir, seed=args.seed, engine=args.engine, **kwargs)
    except ValueError as err:
        print(f"npr demo: error: {err}", file=sys.stderr)
        return 2
    report = pipeline.run_demo(config)
    return 0 if report["rows"] else 1


def run_quick(args: argparse.Namespace) -> int:
    import torch

    from npr.loading import encode_prompt, parse_script
    from npr.decoding import Decoder, DecodingConfig, SamplingParams
    from npr import structured_logprobs
    from npr.view import render_tree, summarize
    from npr.tiny import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, seed=args.seed, dtype=torch.float64)
    decoder = Decoder(model, tokenizer, DecodingConfig(max_new_tokens=256))
    prompt = encode_prompt(tokenizer, args.prompt, use_chat_template=True)
    [result] = decoder.generate([prompt], SamplingParams(temperature=0.0, seed=args.seed),
                                script=parse_script(args.script))
    with torch.no_grad():
        trainer = structured_logprobs(model, result.layout)
    gap = (trainer - torch.tensor(result.logprobs, dtype=trainer.dtype)).abs().max().item()
    stats = result.stats
    if args.json:
        print(json.dumps({**summarize(result, tokenizer), "max_logprob_gap": gap}, ensure_ascii=False))
        return 0 if gap < 1e-6 else 1
    print(f"Tiny random Qwen3 (2 layers, float64) built in memory; {describe_script(args.script)}.\n")
    print(render_tree(result, tokenizer))
    print(f"\nparallel speed-up bound (total / critical path): {stats['total_tokens'] / stats['critical_path_tokens']:.2f}x")
    print(f"train/inference consistency: max |decoder log-prob - structured-forward log-prob| = {gap:.2e}"
          f" ({'OK' if gap < 1e-6 else 'MISMATCH'})")
    return 0 if gap < 1e-6 else 1
