"""Streaming of fork-join requests in the real sglang.Engine (CPU, float32, backend "npr", tiny Qwen3),
started with incremental_streaming_output (each chunk carries only its new ids, text and log-probs):
the chunks of a scripted multi-block request concatenate to the non-streamed output (ids and text exactly,
log-probs to float rounding), chunks arrive before the finish (trunk runs before a fork, blocks once they end),
meta_info["npr"] comes with the final chunk only, and an abort mid-stream ends the stream cleanly with
no leaked KV slot."""

import asyncio
import time

import pytest

from sglang_npr.client import npr_sampling_params
from tests.hosts import require_host
from tests.sglang_npr.engines import abort_while_paused, assert_partial_of, assert_same_logprobs, cpu_engine, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

MAX_NEW = 300
PROMPT = [1, 5, 9, 12, 40, 41, 7]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))
    with cpu_engine(path, "npr", incremental_streaming_output=True) as engine:
        yield engine


def params(script):
    return npr_sampling_params({"max_new_tokens": MAX_NEW, "temperature": 0.0}, script=script, max_branches=5)


def concat(chunks):
    ids = [t for c in chunks for t in c["output_ids"]]
    text = "".join(c["text"] for c in chunks)
    logprobs = [tuple(lp[:2]) for c in chunks for lp in c["meta_info"].get("output_token_logprobs", [])]
    return ids, text, logprobs


def test_streamed_chunks_concatenate_to_the_non_streamed_output(engine):
    script = [[3, 5], [2, 4, 1]]
    whole = engine.generate(input_ids=PROMPT, sampling_params=params(script), return_logprob=True)
    assert whole["meta_info"]["npr"]["stats"]["num_forks"] == 2
    chunks = list(engine.generate(input_ids=PROMPT, sampling_params=params(script), return_logprob=True, stream=True))
    ids, text, logprobs = concat(chunks)
    assert ids == whole["output_ids"]
    assert text == whole["text"]
    assert_same_logprobs(logprobs, whole["meta_info"]["output_token_logprobs"])
    assert len(chunks) > 1 and all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["meta_info"]["finish_reason"] == whole["meta_info"]["finish_reason"]
    assert chunks[-1]["meta_info"]["npr"] == whole["meta_info"]["npr"]
    assert all("npr" not in c["meta_info"] for c in chunks[:-1])


def test_chunks_arrive_before_the_finish(engine):
    """Trunk tokens stream as they are written, a block arrives once its branches have ended (here in
    one chunk: equal branch lengths end together), and the first block is out before the request ends."""
    from transformers import AutoTokenizer

    from npr.schema import TagIds

    tags = TagIds.from_tokenizer(AutoTokenizer.from_pretrained(engine.server_args.model_path))
    script = [[20, 20, 20], [20, 20]]
    whole = engine.generate(input_ids=PROMPT, sampling_params=params(script))
    chunks = list(engine.generate(input_ids=PROMPT, sampling_params=params(script), stream=True))
    ids, text, _ = concat(chunks)
    assert ids == whole["output_ids"] and text == whole["text"]
    early = [t for c in chunks if c["meta_info"]["finish_reason"] is None for t in c["output_ids"]]
    assert tags.takeaway_open in early, "the first block was not streamed before the finish"
    fork = ids.index(tags.step_open)
    block = next(c["output_ids"] for c in chunks if tags.step_open in c["output_ids"])
    assert block[0] == tags.step_open and block.count(tags.step_open) == 3  # the block came whole
    assert sum(len(c["output_ids"]) for c in chunks[:chunks.index(next(
        c for c in chunks if tags.step_open in c["output_ids"]))]) == fork  # after the trunk before it


def test_abort_mid_stream_ends_cleanly(engine):
    """Aborted once the first block has joined (while the trunk or the second block runs): the stream
    ends with an "abort" chunk carrying meta_info["npr"], the chunks add up to a clean cut of the
    finished output (an open block keeps its partial branches), and no KV slot is leaked."""
    from transformers import AutoTokenizer

    from npr.schema import TagIds

    tags = TagIds.from_tokenizer(AutoTokenizer.from_pretrained(engine.server_args.model_path))
    script = [[40] * 4, [100] * 4]  # 100+ steps left at the abort
    whole = engine.generate(input_ids=PROMPT, sampling_params=params(script))

    async def run():
        chunks, aborted = [], False
        stream = await engine.async_generate(input_ids=PROMPT, sampling_params=params(script), stream=True,
                                             return_logprob=True, rid="stream-abort-me")
        async for chunk in stream:
            chunks.append(chunk)
            if not aborted and tags.takeaway_open in chunk["output_ids"]:
                await abort_while_paused(engine, ["stream-abort-me"])
                aborted = True
        return chunks

    chunks = engine.loop.run_until_complete(asyncio.wait_for(run(), 300))
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert chunks[-1]["meta_info"]["npr"]["finish_reason"] == "abort"
    ids, _, logprobs = concat(chunks)
    assert len(logprobs) == len(ids)
    assert tags.takeaway_open in ids and len(ids) < len(whole["output_ids"])
    assert_partial_of(PROMPT, ids, whole["output_ids"], tags)
    time.sleep(1.0)  # idle: SGLang's strict leak check of KV slots and req_to_token rows runs now
    again = engine.generate(input_ids=[6, 7, 8], sampling_params={"max_new_tokens": 4, "temperature": 0.0})
    assert len(again["output_ids"]) == 4  # the scheduler is alive: no leak was found
