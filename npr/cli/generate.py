"""`npr generate`: fork-join decoding of one prompt with any HF causal LM whose tokenizer has the tags."""

from __future__ import annotations

import argparse
import json
import sys


def parse_script(spec: str | None):
    """'3,5/4,4,6' -> ScriptedStructure([[3, 5], [4, 4, 6]]) (forces structure on an untrained model)."""
    if not spec:
        return None
    from npr.decoding import ScriptedStructure

    try:
        blocks = [[int(x) for x in block.split(",")] for block in spec.split("/")]
    except ValueError:
        raise SystemExit(f"--script {spec!r}: expected branch lengths like '3,5/4,4,6' (blocks split by '/')")
    return ScriptedStructure(blocks)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local path or hub name of a causal LM (with the tag tokens)")
    parser.add_argument("--prompt", required=True, help="the user message")
    parser.add_argument("--max-branches", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="bound on the critical path")
    parser.add_argument("--max-total-tokens", type=int, default=None, help="bound on all generated tokens")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequential", action="store_true", help="never fork (plain decoding, for comparison)")
    parser.add_argument("--script", default=None, help="force a structure, e.g. '3,5/4,4,6' (demos, tests)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--no-chat-template", action="store_true", help="encode the prompt as plain text")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tree")
    parser.add_argument("--quiet", action="store_true", help="no progress indicator")


def load(model_name: str, device: str | None, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch_dtype).to(device).eval()
    return model, tokenizer


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool) -> list[int]:
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return list(tokenizer.encode(prompt))


def run(args: argparse.Namespace) -> int:
    from npr.decoding import Decoder, DecodingConfig, SamplingParams
    from npr.render import final_answer, render_tree, summarize
    from npr.schema import NprError

    script = parse_script(args.script)
    try:
        config = DecodingConfig(max_branches=args.max_branches, max_new_tokens=args.max_new_tokens,
                                max_total_tokens=args.max_total_tokens, parallel=not args.sequential)
        sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
        model, tokenizer = load(args.model, args.device, args.dtype)
        decoder = Decoder(model, tokenizer, config)
    except (NprError, ValueError, TypeError, OSError) as err:
        print(f"npr generate: {err}", file=sys.stderr)
        return 2
    prompt = encode_prompt(tokenizer, args.prompt, not args.no_chat_template)
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    [result] = decoder.generate([prompt], sampling, script=script, progress=progress)
    if progress:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(summarize(result, tokenizer), ensure_ascii=False))
    else:
        print(render_tree(result, tokenizer))
        print()
        print("answer:", final_answer(result.text))
    return 0
