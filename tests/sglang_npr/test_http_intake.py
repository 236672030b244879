"""Bad requests to `python -m sglang.launch_server --attention-backend npr` (CPU, loopback) cannot take the
server down: an empty prompt (text or ids, plain or NPR), out-of-vocabulary ids, custom_params / its "npr"
value of every wrong JSON type, a 1 MB prompt and a body that is not JSON each get a 4xx naming the value;
a normal plain request and a normal fork-join request right after each return exactly what they returned
before; at the end the server has been idle (SGLang's strict idle leak check ran) and still serves."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sglang_npr.client import npr_sampling_params
from tests.hosts import make_env, require_host
from tests.sglang_npr.engines import launch_server, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

PLAIN = {"input_ids": [5, 6, 7, 40], "sampling_params": {"max_new_tokens": 8, "temperature": 0.0}}
NPR = {"input_ids": [1, 5, 9, 12], "return_logprob": True,
       "sampling_params": npr_sampling_params({"max_new_tokens": 32, "temperature": 0.0}, script=[[3, 5]],
                                              max_branches=5)}
SMALL = {"max_new_tokens": 8, "temperature": 0.0}


def _npr_small(**extra):
    return npr_sampling_params(SMALL, max_branches=5, **extra)


def _post(url: str, data: bytes, timeout: float = 600) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _generate(base: str, payload: dict) -> dict:
    status, body = _post(f"{base}/generate", json.dumps(payload).encode())
    assert status == 200, body
    return json.loads(body)


def _assert_same(after: tuple, before: tuple, case: str) -> None:
    """Ids and stats exactly; log-probs within the engine's tolerance (a repeated prompt prefills its last
    token over the radix cache, which sums in another order than the first, uncached prefill)."""
    assert (after[0], after[1], after[3]) == (before[0], before[1], before[3]), f"{case}: the next requests changed"
    assert len(after[2]) == len(before[2]), f"{case}: the number of log-probs changed"
    assert max(abs(a - b) for a, b in zip(after[2], before[2])) <= 1e-4, f"{case}: the log-probs changed"


def _normal(base: str) -> tuple:
    plain, npr = _generate(base, PLAIN), _generate(base, NPR)
    return (plain["output_ids"], npr["output_ids"], [lp[0] for lp in npr["meta_info"]["output_token_logprobs"]],
            npr["meta_info"]["npr"]["stats"])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="module")
def vocab_size(model_path):
    return json.loads((Path(model_path) / "config.json").read_text())["vocab_size"]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with launch_server(model_path, log, make_env(), max_total_tokens=8192) as base:
        yield base


def bad_requests(vocab_size: int) -> list[tuple[str, bytes, list[str]]]:
    """(case, raw body, substrings the error must hold)."""
    def body(payload):
        return json.dumps(payload).encode()

    empty = "the prompt is empty"
    object_shape = "must be a JSON object"
    cases = [
        ("empty text", body({"text": "", "sampling_params": SMALL}), [empty, "text ''"]),
        ("empty ids", body({"input_ids": [], "sampling_params": SMALL}), ["input_ids", "empty"]),  # SGLang's own
        ("empty text, npr", body({"text": "", "sampling_params": _npr_small()}), [empty]),
        ("id = vocab", body({"input_ids": [5, vocab_size], "sampling_params": SMALL}),
         [f"token id {vocab_size}", f"vocabulary size {vocab_size}"]),
        ("huge id, npr", body({"input_ids": [5, 10**9], "sampling_params": _npr_small()}),
         [f"token id {10**9}", f"vocabulary size {vocab_size}"]),
        ("negative id", body({"input_ids": [-1, 5], "sampling_params": SMALL}), ["token id -1"]),
        ("1 MB prompt", body({"text": "2+2=4. " * ((1 << 20) // 7), "sampling_params": SMALL}), ["context length"]),
        ("not JSON", b"{this is not json", []),
        ("not JSON at all", b"\xff\xfe binary", []),
    ]
    for value, json_type in [("npr", "string"), (["npr"], "array"), (3, "number"), (True, "boolean")]:
        cases.append((f"custom_params {json_type}", body({"text": "hi", "sampling_params": {**SMALL, "custom_params": value}}),
                      ["sampling_params['custom_params']", object_shape, f"got {json_type}"]))
    for value, json_type in [("npr", "string"), ([4], "array"), (4, "number"), (None, "null"), (False, "boolean")]:
        cases.append((f"npr {json_type}", body({"text": "hi", "sampling_params": {**SMALL, "custom_params": {"npr": value}}}),
                      ["custom_params['npr']", object_shape, f"got {json_type}"]))
    return cases


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, vocab_size):
    before = _normal(server)
    for case, data, needles in bad_requests(vocab_size):
        status, body = _post(f"{server}/generate", data)
        assert 400 <= status < 500, f"{case}: HTTP {status} {body[:500]}"
        for needle in needles:
            assert needle in body, f"{case}: {needle!r} not in {body[:500]}"
        _assert_same(_normal(server), before, case)
    status, body = _post(f"{server}/v1/completions", json.dumps({"model": "default", "prompt": "",
                                                                  "max_tokens": 8}).encode())
    assert 400 <= status < 500 and "empty" in body.lower(), f"/v1/completions: HTTP {status} {body[:500]}"
    time.sleep(1.5)  # idle: SGLang's strict leak check of KV slots and req_to_token rows runs now
    _assert_same(_normal(server), before, "after the idle leak check")
