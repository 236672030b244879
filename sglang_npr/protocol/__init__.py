"""Deprecated alias of `npr.wire` (the wire protocol moved into the core, where verl_npr, npr.eval and
sglang_npr all reach it). Kept for one release; import `npr.wire` instead. (A package, not a module, so
that git follows sglang_npr/protocol.py to npr/wire.py.)"""

from npr.wire import (FIELDS, NPR_KEY, NprParams, NprParamsError, encode_npr_params,  # noqa: F401
                      parse_npr_params)

__all__ = ["FIELDS", "NPR_KEY", "NprParams", "NprParamsError", "encode_npr_params", "parse_npr_params"]
