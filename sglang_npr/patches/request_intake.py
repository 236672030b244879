"""Request intake (tokenizer side, where errors go back to the client): a request carrying
`custom_params["npr"]` is parsed and validated here, and refused with a clear message unless this
server can really fork-join it (see sglang_npr.capabilities). Plain requests pass untouched."""

from __future__ import annotations

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object"


def check_npr_request(tokenized, self, *args, **kwargs):
    from sglang_npr.capabilities import capabilities, request_refusal, server_refusal
    from npr.wire import NprParamsError, parse_npr_params

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


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, check_npr_request, HookType.AFTER)
