"""Request intake (tokenizer side, where errors go back to the client): a request carrying
`custom_params["npr"]` is parsed and validated here, and refused with a clear message unless this
server can really fork-join it (backend "npr", scheduler integration present). Plain requests pass."""

from __future__ import annotations

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object"


def check_npr_request(tokenized, self, *args, **kwargs):
    from sglang_npr.capabilities import capabilities
    from sglang_npr.protocol import NprParamsError, parse_npr_params

    sampling = getattr(tokenized, "sampling_params", None)
    params = parse_npr_params(getattr(sampling, "custom_params", None))
    if params is None:
        return tokenized
    backend = getattr(self.server_args, "attention_backend", None)
    if backend != "npr":
        raise NprParamsError(f"this request carries custom_params['npr'] but the server runs attention backend "
                             f"{backend!r}; start it with --attention-backend npr (sglang.Engine(attention_backend='npr'))")
    missing = capabilities()["missing"]
    if missing:
        raise NprParamsError("this request carries custom_params['npr'] but fork-join decoding is not available in "
                             f"this build of sglang_npr: {missing}. Send it without custom_params['npr'] for plain decoding.")
    params.resolved(sampling.max_new_tokens)  # a missing critical-path budget fails here, not in the scheduler
    return tokenized


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, check_npr_request, HookType.AFTER)
