"""Request intake (tokenizer side, where errors go back to the client as HTTP 400): every request is
refused here when one request could otherwise take the scheduler down (an empty prompt, a token id
outside the model's vocabulary, custom_params that is not a dict); a request carrying
`custom_params["npr"]` is parsed and validated, and refused with a clear message unless this server can
really fork-join it (see sglang_npr.capabilities). Other plain requests pass untouched."""

from __future__ import annotations

from typing import Any

from npr.errors import NprError

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object"


def check_npr_request(tokenized, self, *args, **kwargs):
    from sglang_npr.capabilities import capabilities, request_refusal, server_refusal
    from npr.wire import NprParamsError, parse_npr_params

    check_prompt(tokenized, _vocab_size(self))
    sampling = getattr(tokenized, "sampling_params", None)
    params = parse_npr_params(getattr(sampling, "custom_params", None))
    if params is None:
        return tokenized
    reason = server_refusal(self.server_args)
    if reason is None and capabilities()["missing"]:
        reason = f"fork-join decoding is not available in this build of sglang_npr: {capabilities()['missing']}"
    reason = reason or request_refusal(tokenized)
    if reason:
        raise NprParamsError(f"this request carries custom_params['npr'] but {reason}")
    resolved = params.resolved(sampling.max_new_tokens)  # a missing budget fails here, not in the scheduler
    context_len = getattr(self, "context_len", None)
    num_input = len(getattr(tokenized, "input_ids", None) or ())
    if context_len and num_input + resolved.max_total_tokens > context_len:
        raise NprParamsError(f"this request's prompt ({num_input} tokens) plus custom_params['npr'] max_total_tokens "
                             f"({resolved.max_total_tokens}) exceeds the model's context length {context_len}; lower "
                             "max_total_tokens (or max_new_tokens / max_branches, which set its default)")
    return tokenized


class PromptError(NprError, ValueError):
    """A prompt no request may carry (SGLang would fail on it inside the scheduler, for every request)."""


def check_prompt(tokenized: Any, vocab_size: int | None) -> None:
    """Refuse a generate request whose prompt is empty (SGLang 0.5.23's scheduler raises IndexError on it
    and shuts down) or holds a token id outside [0, vocab_size) (an embedding IndexError). Requests whose
    prompt comes as embeddings or multimodal inputs are left to SGLang.

    Raises PromptError (a ValueError: HTTP 400) naming the value and the fix.
    """
    input_ids = getattr(tokenized, "input_ids", None)
    if input_ids is None or getattr(tokenized, "input_embeds", None) is not None or getattr(tokenized, "mm_inputs", None):
        return
    if len(input_ids) == 0:
        text = getattr(tokenized, "input_text", None)
        given = f"text {text!r}" if text is not None else "input_ids []"
        raise PromptError(f"the prompt is empty ({given} gives 0 tokens); send at least one token: a non-empty "
                          "text or input_ids")
    if vocab_size:
        low, high = min(input_ids), max(input_ids)
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise PromptError(f"input_ids holds token id {bad}, outside the model's vocabulary [0, {vocab_size}) "
                              f"(vocabulary size {vocab_size}); send ids the model's tokenizer produced")


def _vocab_size(manager: Any) -> int | None:
    model_config = getattr(manager, "model_config", None)
    return getattr(model_config, "vocab_size", None)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, check_npr_request, HookType.AFTER)
