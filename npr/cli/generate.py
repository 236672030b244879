"""`npr generate`: fork-join decoding of one prompt with any HF causal LM whose tokenizer has the tags.

Every bad input (model path, device, sampling setting, prompt) is reported as `npr generate: error: ...`
with exit code 2 before decoding starts, never as a traceback halfway through.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from npr.cli import CliError, fail

# files of which a saved tokenizer has at least one (transformers' save_pretrained writes the first two)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
_HUB_ID_RE = re.compile(r"[\w.-]+(/[\w.-]+)?")
MAKE_TINY_HINT = "python -c \"from npr.tiny import save_tiny; save_tiny('DIR')\" writes a tiny one that works"


def parse_script(spec: str | None):
    """'3,5/4,4,6' -> ScriptedStructure([[3, 5], [4, 4, 6]]) (forces structure on an untrained model);
    '' or None -> None (no script). Raises ValueError naming the spec and the expected form."""
    if not spec or not spec.strip():
        return None
    from npr.decoding import ScriptedStructure

    try:
        return ScriptedStructure([[int(x) for x in block.split(",")] for block in spec.split("/")])
    except ValueError as err:
        raise ValueError(f"{spec!r}: expected branch lengths like '3,5/4,4,6' (blocks split by '/', "
                         f"branches by ',', each length an integer >= 0): {err}") from None


def script_spec(spec: str) -> str:
    """argparse type of --script: the spec, checked when the command line is read."""
    try:
        parse_script(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return spec


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


def resolve_device(spec: str | None):
    """The torch.device for --device (None: cuda when available, else cpu). Raises CliError for a name
    torch does not know or an accelerator this machine does not have."""
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {spec!r} is not a device: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise CliError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}, {build}, "
                           "no usable GPU): use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CliError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {spec}: MPS is not available here: use --device cpu")
    return device


def check_model_source(name: str) -> None:
    """A local folder must exist and hold a tokenizer; anything that is not a hub id is a local path.
    Raises CliError naming the path and the fix (hub ids are left to transformers)."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
            raise CliError(f"--model {name}: the folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                           "save the tokenizer next to the model with tokenizer.save_pretrained(...)")
    elif os.path.exists(path):
        raise CliError(f"--model {name}: is a file; expected a model folder (config.json, weights, tokenizer)")
    elif name.startswith((".", "/", "~")) or not _HUB_ID_RE.fullmatch(name):
        raise CliError(f"--model {name}: no such folder. Give a local model folder ({MAKE_TINY_HINT}) "
                       "or a hub id such as Qwen/Qwen3-0.6B")


def load(model_name: str, device: str | None, dtype: str):
    """(model on its device in eval mode, tokenizer). Raises CliError for a bad source or device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    check_model_source(model_name)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        raise CliError(f"--model {model_name}: {err}") from None
    return model.to(target).eval(), tokenizer


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool) -> list[int]:
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return list(tokenizer.encode(prompt))


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


def answer_text(text: str, tokenizer) -> str:
    """The response as the reward reads it: special tokens other than the tags (<|im_end|>, padding) removed."""
    from npr.schema import TAG_STRINGS

    for special in set(getattr(tokenizer, "all_special_tokens", ())) - set(TAG_STRINGS):
        text = text.replace(special, "")
    return text


def answer_line(text: str) -> str:
    """The `answer:` line: the answer the reward grades (last \\boxed{} after the last </takeaway>)."""
    from reward import extract_answer  # the console script is the app layer: it may show the reward's view

    answer = extract_answer(text)
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
    from npr.render import render_tree, summarize
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
        from reward import extract_answer

        print(json.dumps({**summarize(result, tokenizer), "answer": extract_answer(text).text}, ensure_ascii=False))
    else:
        print(render_tree(result, tokenizer))
        print()
        print(answer_line(text))
    return 0
