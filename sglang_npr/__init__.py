"""SGLang plugin: `register()` is the `sglang.srt.plugins` entry point. Importing this package does nothing."""

from npr.wire import NprParams, NprParamsError, encode_npr_params, parse_npr_params
from sglang_npr.registration import is_registered, register

__all__ = ["register", "is_registered", "NprParams", "NprParamsError", "parse_npr_params", "encode_npr_params"]
