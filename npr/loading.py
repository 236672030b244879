"""Loading an HF causal LM and its tokenizer for npr's commands and engines, encoding a prompt, the
response text the graders read, and `--script` specs. Library code (the CLI and `npr.eval` call it);
every bad input raises `InputError` naming the value and the fix, before any decoding."""

from __future__ import annotations

import argparse
import os
import re

from npr.errors import NprError

# files of which a saved tokenizer has at least one (transformers' save_pretrained writes the first two)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
_HUB_ID_RE = re.compile(r"[\w.-]+(/[\w.-]+)?")
MAKE_TINY_HINT = "python -c \"from npr.tiny import save_tiny; save_tiny('DIR')\" writes a tiny one that works"


class InputError(NprError, ValueError):
    """A bad model source, device, prompt or option value (`npr.cli.CliError` is this class)."""


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


def resolve_device(spec: str | None):
    """The torch.device for --device (None: cuda when available, else cpu). Raises InputError for a name
    torch does not know or an accelerator this machine does not have."""
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {spec!r} is not a device: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InputError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}, {build}, "
                             "no usable GPU): use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {spec}: MPS is not available here: use --device cpu")
    return device


def check_model_source(name: str) -> None:
    """A local folder must exist and hold a tokenizer; anything that is not a hub id is a local path.
    Raises InputError naming the path and the fix (hub ids are left to transformers)."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
            raise InputError(f"--model {name}: the folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                             "save the tokenizer next to the model with tokenizer.save_pretrained(...)")
    elif os.path.exists(path):
        raise InputError(f"--model {name}: is a file; expected a model folder (config.json, weights, tokenizer)")
    elif name.startswith((".", "/", "~")) or not _HUB_ID_RE.fullmatch(name):
        raise InputError(f"--model {name}: no such folder. Give a local model folder ({MAKE_TINY_HINT}) "
                         "or a hub id such as Qwen/Qwen3-0.6B")


def load(model_name: str, device: str | None, dtype: str):
    """(model on its device in eval mode, tokenizer). Raises InputError for a bad source or device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    check_model_source(model_name)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        raise InputError(f"--model {model_name}: {err}") from None
    return model.to(target).eval(), tokenizer


def encode_prompt(tokenizer, prompt: str, use_chat_template: bool) -> list[int]:
    """Token ids of one user message: through the chat template (with the generation prompt) when the
    tokenizer has one and `use_chat_template`, else the plain text."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return list(tokenizer.encode(prompt))


def answer_text(text: str, tokenizer) -> str:
    """The response as the reward reads it: special tokens other than the tags (<|im_end|>, padding) removed."""
    from npr.schema import TAG_STRINGS

    for special in set(getattr(tokenizer, "all_special_tokens", ())) - set(TAG_STRINGS):
        text = text.replace(special, "")
    return text
