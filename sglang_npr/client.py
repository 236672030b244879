"""Client helpers for NPR requests to SGLang (sglang.Engine in-process, or a server over HTTP). They
check, once per engine / URL, that the server reports the plugin with fork-join enabled: stock SGLang
silently ignores custom_params["npr"] (it only reaches custom logit processors), which would decode
sequentially and stop where a fork should have happened."""

from __future__ import annotations

import copy
import json
import urllib.request
from typing import Any, Sequence

from npr.errors import NprError
from sglang_npr.patches.server_info import KEY
from npr.wire import NPR_KEY, encode_npr_params


class NprServerError(NprError, RuntimeError):
    """The SGLang server cannot run NPR requests (plugin absent or fork-join off)."""


def npr_sampling_params(sampling_params: dict[str, Any] | None = None, *, script: Sequence[Sequence[int]] | None = None,
                        **limits: int) -> dict[str, Any]:
    """A copy of `sampling_params` with custom_params["npr"] set (validated; see npr.wire)."""
    out = copy.deepcopy(dict(sampling_params or {}))
    custom = dict(out.get("custom_params") or {})
    custom[NPR_KEY] = encode_npr_params(script=script, **limits)
    out["custom_params"] = custom
    return out


def require_npr_server(server_info: dict[str, Any], where: str = "the server") -> dict[str, Any]:
    """The server's "npr" entry; raises NprServerError when the plugin is absent or cannot fork-join."""
    info = server_info.get(KEY)
    if not isinstance(info, dict):
        raise NprServerError(
            f"{where} does not run the NPR plugin (its server info has no {KEY!r} entry). Stock SGLang ignores "
            "custom_params['npr'] and would decode sequentially, stopping at the first </guideline>. Install "
            "native-parallel-reasoner next to SGLang and start it with --attention-backend npr.")
    if not info.get("fork_join_enabled"):
        reason = info.get("refusal") or info.get("missing") or "unknown reason"
        raise NprServerError(f"{where} runs the NPR plugin but fork-join is off: {reason}")
    return info


def _has_npr(sampling_params) -> bool:
    items = sampling_params if isinstance(sampling_params, list) else [sampling_params]
    return any(NPR_KEY in ((sp or {}).get("custom_params") or {}) for sp in items)


_CHECKED_ENGINES: set[int] = set()


def engine_generate(engine, *, input_ids, sampling_params, **kwargs):
    """engine.generate(...) that first checks the engine can run NPR requests when any carries "npr"."""
    if _has_npr(sampling_params) and id(engine) not in _CHECKED_ENGINES:
        require_npr_server(engine.get_server_info(), where="this sglang.Engine")
        _CHECKED_ENGINES.add(id(engine))
    return engine.generate(input_ids=input_ids, sampling_params=sampling_params, **kwargs)


def http_generate(base_url: str, payload: dict[str, Any], timeout: float = 600) -> Any:
    """POST {base_url}/generate, after GET /server_info when the payload carries NPR parameters."""
    if _has_npr(payload.get("sampling_params")):
        require_npr_server(get_json(f"{base_url}/server_info", timeout), where=base_url)
    request = urllib.request.Request(f"{base_url}/generate", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get_json(url: str, timeout: float) -> Any:
    """GET `url` and parse its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


_get_json = get_json  # the old private name
