"""`npr generate`: fork-join decoding of one prompt with any HF causal LM whose tokenizer has the tags.

Every bad input (model path, device, sampling setting, prompt) is reported as `npr generate: error: ...`
with exit code 2 before decoding starts, never as a traceback halfway through.
"""

from __future__ import annotations

import argparse
import json
import sys

from npr.cli import CliError, fail

# the library functions of this command live in npr.loading (the old names stay importable from here)
from npr.loading import (MAKE_TINY_HINT, TOKENIZER_FILES, answer_text, check_model_source, encode_prompt,  # noqa: F401,E402
                         load, parse_script, resolve_device, script_spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local folder or hub name of a causal LM (with the tag tokens)")
    parser.add_argument("--prompt", required=True, help="the user message")
    parser.add_argument("--max-branches", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="bound on the critical path")
    parser.add_argument("--max-total-tokens", type=int, default=None, help="bound on all generated tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequential", action="store_true", help="never fork (plain decoding, for comparison)")
    parser.add_argument("--script", type=script_spec, default=None,
                        help="force a structure, e.g. '3,5/4,4,6' (demos, tests)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--no-chat-template", action="store_true", help="encode the prompt as plain text")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tree")
    parser.add_argument("--quiet", action="store_true", help="no progress indicator")


def check_ids_fit(model, tokenizer, prompt: list[int], tag_ids) -> None:
    """The prompt is not empty and every id the decoder will feed (prompt, tags) has a row in the model's
    embedding table. Raises CliError naming the id and the fix."""
    if not prompt:
        raise CliError("the prompt encodes to no tokens: give a non-empty --prompt "
                       "(or drop --no-chat-template, so the chat template wraps it)")
    num_rows = model.get_input_embeddings().num_embeddings
    for what, ids in (("the prompt", prompt), ("the tags", list(tag_ids))):
        top = max(ids)
        if top >= num_rows:
            raise CliError(f"token id {top} of {what} is outside the model's embedding table ({num_rows} rows; "
                           f"the tokenizer has {len(tokenizer)} tokens): after adding tokens to the tokenizer, "
                           "call model.resize_token_embeddings(len(tokenizer)) and save the model again")


def answer_line(text: str, grader=None) -> str:
    """The `answer:` line: the answer the grader grades (reward's: last \\boxed{} after the last </takeaway>)."""
    from npr.graders import load_grader

    answer = (grader or load_grader()).extract_answer(text)
    if answer.source == "boxed":
        return f"answer: {answer.text}"
    if answer.source == "phrase":
        return f"answer: {answer.text}  (from an 'answer is' phrase; no \\boxed{{}})"
    return "answer: none (no \\boxed{...} after the last </takeaway>)"


def run(args: argparse.Namespace) -> int:
    try:
        return generate(args)
    except CliError as err:
        return fail("generate", str(err))


def generate(args: argparse.Namespace) -> int:
    """The subcommand's work; raises CliError for a bad input, before decoding starts."""
    from npr.decoding import Decoder, DecodingConfig, SamplingParams
    from npr.view import render_tree, summarize
    from npr.schema import NprError

    try:
        config = DecodingConfig(max_branches=args.max_branches, max_new_tokens=args.max_new_tokens,
                                max_total_tokens=args.max_total_tokens, parallel=not args.sequential)
        sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    except (ValueError, TypeError) as err:
        raise CliError(str(err)) from None
    model, tokenizer = load(args.model, args.device, args.dtype)
    try:
        decoder = Decoder(model, tokenizer, config)
    except (NprError, ValueError) as err:
        raise CliError(f"--model {args.model}: {err}") from None
    prompt = encode_prompt(tokenizer, args.prompt, not args.no_chat_template)
    check_ids_fit(model, tokenizer, prompt, decoder.templates.tags.all)
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    [result] = decoder.generate([prompt], sampling, script=parse_script(args.script), progress=progress)
    if progress:
        print(file=sys.stderr)
    text = answer_text(result.text, tokenizer)
    if args.json:
        from npr.graders import load_grader

        answer = load_grader().extract_answer(text).text
        print(json.dumps({**summarize(result, tokenizer), "answer": answer}, ensure_ascii=False))
    else:
        print(render_tree(result, tokenizer))
        print()
        print(answer_line(text))
    return 0
