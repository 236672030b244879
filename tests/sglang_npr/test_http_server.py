"""Fork-join through `python -m sglang.launch_server --attention-backend npr` over HTTP on loopback (CPU):
a scripted request equals the reference decoder; a bounded load of 64 concurrent fork-join requests,
some aborted mid-request, all finish or abort cleanly (aborted ones return a clean prefix); a streamed
request grows chunk by chunk to the non-streamed output; afterwards
the server is idle with no leaked KV slot or req_to_token row (SGLang's strict idle check would raise
in the scheduler and the next request would fail)."""

import json
import random
import threading
import time
import urllib.request

import pytest
import torch

from sglang_npr.client import http_generate, npr_sampling_params
from tests.hosts import make_env, require_host
from tests.sglang_npr.engines import assert_partial_of, assert_same_logprobs, launch_server, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

MAX_NEW = 48
NUM_LOAD = 64


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, payload: dict, timeout: float = 600):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with launch_server(model_path, log, make_env(), max_total_tokens=16384, max_running_requests=128) as base:
        yield base


@pytest.fixture(scope="module")
def decoder(model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npr.decoding import Decoder, DecodingConfig

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    return Decoder(model, AutoTokenizer.from_pretrained(model_path), DecodingConfig(max_branches=5, max_new_tokens=MAX_NEW))


def _reference(decoder, prompts, scripts):
    from npr.decoding import SamplingParams, ScriptedStructure

    return decoder.generate(prompts, SamplingParams(temperature=0.0),
                            script=[ScriptedStructure(branch_lengths=s) for s in scripts])


def _payload(prompt, script, rid=None, max_new=MAX_NEW, **limits):
    payload = {"input_ids": prompt, "return_logprob": True,
               "sampling_params": npr_sampling_params({"max_new_tokens": max_new, "temperature": 0.0},
                                                      script=script, max_branches=5, **limits)}
    if rid is not None:
        payload["rid"] = rid
    return payload


def _check(out, ref):
    assert out["output_ids"] == ref.token_ids
    logprobs = [lp[0] for lp in out["meta_info"]["output_token_logprobs"]]
    assert max(abs(a - b) for a, b in zip(logprobs, ref.logprobs)) <= 1e-4
    assert out["meta_info"]["npr"]["stats"] == ref.stats


def test_http_fork_join_equals_reference(server, decoder):
    prompt, script = [1, 5, 9, 12, 40, 41, 7], [[3, 5], [2, 4, 1]]
    out = http_generate(server, _payload(prompt, script))
    _check(out, _reference(decoder, [prompt], [script])[0])


def _stream(url: str, payload: dict, timeout: float = 600, on_chunk=None) -> list[dict]:
    """The server-sent events of a streaming /generate, parsed (up to "data: [DONE]"); `on_chunk()` is
    called after each."""
    request = urllib.request.Request(url, data=json.dumps({**payload, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    chunks = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                break
            chunks.append(json.loads(data))
            if on_chunk is not None:
                on_chunk()
    return chunks


def test_http_stream_grows_to_the_non_streamed_output(server):
    """The server streams cumulatively (SGLang's default, incremental_streaming_output off): every chunk
    extends the one before, chunks come before the finish, and the last equals the non-streamed output
    (ids and text exactly, log-probs to float rounding) with meta_info["npr"]."""
    prompt, script = [1, 5, 9, 12, 40, 41, 7], [[12, 12, 12], [12, 12]]
    whole = http_generate(server, _payload(prompt, script))
    chunks = _stream(f"{server}/generate", _payload(prompt, script))
    assert len(chunks) > 1 and all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    for before, after in zip(chunks, chunks[1:]):
        assert after["output_ids"][:len(before["output_ids"])] == before["output_ids"]
        assert after["text"].startswith(before["text"])
    last = chunks[-1]
    assert (last["output_ids"], last["text"]) == (whole["output_ids"], whole["text"])
    assert_same_logprobs(last["meta_info"]["output_token_logprobs"], whole["meta_info"]["output_token_logprobs"])
    assert last["meta_info"]["npr"] == whole["meta_info"]["npr"]


def test_load_with_aborts_finishes_cleanly_and_frees_everything(server, decoder):
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(2, 8))] for _ in range(NUM_LOAD)]
    scripts = [rng.choice([[[2, 3]], [[1, 2, 3]], [[2, 2], [1, 3]], [[3, 1, 2, 1]]]) for _ in range(NUM_LOAD)]
    aborted = set(range(0, NUM_LOAD, 8))
    for i in aborted:  # 300+ steps left when the abort comes
        scripts[i] = [[150, 150, 150], [150, 150]]
    running = {i: threading.Event() for i in aborted}
    outs: dict[int, dict] = {}
    errors: list[BaseException] = []

    def run(i):
        try:
            if i in aborted:  # streamed, to see it running; the last chunk is the whole output
                outs[i] = _stream(f"{server}/generate", _payload(prompts[i], scripts[i], rid=f"load-{i}", max_new=1000,
                                                                    max_total_tokens=1500),
                                  on_chunk=running[i].set)[-1]
            else:
                outs[i] = _post(f"{server}/generate", _payload(prompts[i], scripts[i], rid=f"load-{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(NUM_LOAD)]
    for thread in threads:
        thread.start()
    assert all(event.wait(600) for event in running.values())
    # Aborts sent while SGLang's scheduler is paused in place: no step runs between the pause and the
    # aborts, so each lands mid-request and none can race its request's end.
    _post(f"{server}/pause_generation", {"mode": "in_place"})
    for i in sorted(aborted):
        _post(f"{server}/abort_request", {"rid": f"load-{i}"})
    _post(f"{server}/continue_generation", {})
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and len(outs) == NUM_LOAD
    from npr.decoding import Decoder, DecodingConfig

    refs = _reference(decoder, prompts, scripts)
    long = Decoder(decoder.model, decoder.tokenizer, DecodingConfig(max_branches=5, max_new_tokens=1000,
                                                                    max_total_tokens=1500))
    for i, ref in zip(sorted(aborted), _reference(long, [prompts[i] for i in sorted(aborted)],
                                                  [scripts[i] for i in sorted(aborted)])):
        refs[i] = ref
    num_aborted = 0
    for i, ref in enumerate(refs):
        out = outs[i]
        if out["meta_info"]["finish_reason"]["type"] == "abort":
            assert i in aborted
            assert_partial_of(prompts[i], out["output_ids"], ref.token_ids, decoder.templates.tags)
            num_aborted += 1
        else:
            _check(out, ref)
    assert num_aborted == len(aborted)  # every abort landed mid-request
    time.sleep(1.5)  # idle: SGLang's strict leak check of KV slots and req_to_token rows runs now
    again = _post(f"{server}/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4,
                                                                                  "temperature": 0.0}})
    assert len(again["output_ids"]) == 4
    assert _get(f"{server}/server_info")["npr"]["fork_join_enabled"] is True
