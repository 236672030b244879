"""What this build of the SGLang plugin can do: reported in server info and checked at request intake,
so a feature that is not there is refused with a clear message, never silently wrong."""

from __future__ import annotations

from importlib import metadata
from typing import Any

PROTOCOL = "custom_params.npr/1"

# Features fork-join needs but that are not built yet; while any is listed, NPR requests are refused.
MISSING: tuple[str, ...] = ()


def capabilities() -> dict[str, Any]:
    try:
        version = metadata.version("native-parallel-reasoner")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        version = None
    return {"plugin": "sglang_npr", "version": version, "protocol": PROTOCOL,
            "fork_join": not MISSING, "missing": list(MISSING)}


def server_refusal(server_args: Any) -> str | None:
    """Why a server with these args cannot run NPR requests, or None."""
    if getattr(server_args, "attention_backend", None) != "npr":
        return (f"the server runs attention backend {getattr(server_args, 'attention_backend', None)!r}; start it "
                "with --attention-backend npr (sglang.Engine(attention_backend='npr'))")
    if (getattr(server_args, "page_size", 1) or 1) > 1:
        return (f"fork-join needs --page-size 1 (branch rows grow one slot at a time), got "
                f"{server_args.page_size}; start the server with --page-size 1")
    if getattr(server_args, "speculative_algorithm", None):
        return "speculative decoding is not supported with fork-join; start the server without --speculative-algorithm"
    for name in ("tp_size", "pp_size", "dp_size"):
        if (getattr(server_args, name, 1) or 1) > 1:
            return f"fork-join runs on one scheduler only for now; start the server with --{name.replace('_', '-')} 1"
    if getattr(server_args, "skip_tokenizer_init", False):
        return "fork-join needs the server's tokenizer for the tag ids; start it without --skip-tokenizer-init"
    return None


def request_refusal(tokenized: Any) -> str | None:
    """Why this tokenized request cannot run with fork-join, or None (features of a plain request that
    the fork-join engine does not compute: refused rather than silently dropped)."""
    sp = tokenized.sampling_params
    checks = [
        (any(getattr(sp, k, None) for k in ("json_schema", "regex", "ebnf", "structural_tag")),
         "constrained decoding (json_schema / regex / ebnf / structural_tag)"),
        (getattr(tokenized, "custom_logit_processor", None), "custom_logit_processor"),
        ((getattr(tokenized, "top_logprobs_num", 0) or 0) > 0, "top_logprobs_num > 0"),
        (getattr(tokenized, "token_ids_logprob", None), "token_ids_logprob"),
        (getattr(tokenized, "return_logprob", False) and (getattr(tokenized, "logprob_start_len", -1) or -1) >= 0,
         "input log-probs (logprob_start_len >= 0)"),
        (getattr(tokenized, "return_hidden_states", False), "return_hidden_states"),
        (getattr(tokenized, "session_params", None), "session_params"),
        (getattr(sp, "stop_strs", None), "stop strings (use stop_token_ids)"),
        ((getattr(sp, "frequency_penalty", 0.0) or 0.0) != 0.0 or (getattr(sp, "presence_penalty", 0.0) or 0.0) != 0.0
         or (getattr(sp, "repetition_penalty", 1.0) or 1.0) != 1.0, "frequency/presence/repetition penalties"),
        ((getattr(sp, "min_p", 0.0) or 0.0) > 0.0, "min_p"),
        ((getattr(sp, "min_new_tokens", 0) or 0) > 0, "min_new_tokens"),
        (getattr(sp, "logit_bias", None), "logit_bias"),
    ]
    unsupported = [name for bad, name in checks if bad]
    if unsupported:
        return (f"fork-join requests do not support {unsupported}; remove them or send the request without "
                "custom_params['npr']")
    return None
