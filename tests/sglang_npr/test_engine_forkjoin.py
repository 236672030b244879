"""Fork-join decoding inside the real sglang.Engine (CPU, float32, backend "npr", tiny Qwen3 in a temp
dir) against the reference decoder `npr.decoding.Decoder` on the same weights: scripted structures
(2-5 branches, 1-2 blocks, uneven lengths) in one batch with plain requests give the reference's ids,
log-probs within 1e-4 and meta_info["npr"] equal to its stats; a refused fork goes on sequentially
like the reference; an abort mid-request returns a clean prefix; afterwards every KV slot and
req_to_token row is free (SGLang's strict idle leak check would kill the scheduler otherwise)."""

import asyncio
import math
import time

import pytest
import torch

from sglang_npr.client import engine_generate, npr_sampling_params, require_npr_server
from tests.hosts import require_host
from tests.sglang_npr.engines import abort_while_paused, assert_partial_of, cpu_engine, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

LOGPROB_TOL = 1e-4
MAX_NEW = 80
SCRIPTS = [[[3, 5]], [[2, 4, 1]], [[1, 6, 2, 3, 4]], [[3, 5], [2, 4, 1]], [[4, 1], [2, 2, 5, 3]]]
PROMPTS = [[1, 5, 9, 12, 40, 41, 7], [3, 4, 8], [200, 17, 99, 5, 61], [11, 12, 13, 14, 15, 16, 17, 18, 19], [42, 7]]
PLAIN = [[6, 7, 8, 9], [100, 101]]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="module", params=["overlap", "no-overlap"])
def engine(request, model_path):
    """SGLang's default scheduler (overlap on) and the normal one: every test runs on both."""
    with cpu_engine(model_path, "npr", disable_overlap_schedule=request.param == "no-overlap") as engine:
        yield engine


@pytest.fixture(scope="module")
def hf(model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_path)


def reference(hf, prompts, scripts, **limits):
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure

    model, tokenizer = hf
    decoder = Decoder(model, tokenizer, DecodingConfig(**{"max_branches": 5, "max_new_tokens": MAX_NEW, **limits}))
    return decoder.generate(prompts, SamplingParams(temperature=0.0),
                            script=[ScriptedStructure(branch_lengths=s) if s else None for s in scripts])


def tags_of(hf):
    from npr.schema import TagIds

    return TagIds.from_tokenizer(hf[1])


def npr_params(script, max_new=MAX_NEW, **limits):
    return npr_sampling_params({"max_new_tokens": max_new, "temperature": 0.0}, script=script,
                               **{"max_branches": 5, **limits})


def assert_matches(out, ref):
    assert out["output_ids"] == ref.token_ids
    logprobs = [lp[0] for lp in out["meta_info"]["output_token_logprobs"]]
    assert len(logprobs) == len(ref.token_ids)
    assert all(math.isfinite(x) for x in logprobs)
    assert max(abs(a - b) for a, b in zip(logprobs, ref.logprobs)) <= LOGPROB_TOL
    npr = out["meta_info"]["npr"]
    assert npr["stats"] == ref.stats
    assert (npr["blocks"], npr["refused_forks"], npr["notes"]) == (ref.blocks, ref.refused_forks, ref.notes)
    assert npr["finish_reason"] == ref.finish_reason


def test_server_reports_fork_join(engine):
    info = require_npr_server(engine.get_server_info())
    assert info["inner_attention_backend"] == "torch_native" and info["refusal"] is None


def test_mixed_batch_equals_reference_and_plain_decoding(engine, hf):
    refs = reference(hf, PROMPTS, SCRIPTS)
    assert [r.stats["num_forks"] for r in refs] == [len(s) for s in SCRIPTS]  # the scripts really fork
    plain_params = {"max_new_tokens": 10, "temperature": 0.0}
    outs = engine_generate(engine, input_ids=PROMPTS + PLAIN, return_logprob=True,
                           sampling_params=[npr_params(s) for s in SCRIPTS] + [plain_params] * len(PLAIN))
    for out, ref in zip(outs, refs):
        assert_matches(out, ref)
    alone = engine.generate(input_ids=PLAIN, sampling_params=plain_params, return_logprob=True)
    for mixed, single in zip(outs[len(PROMPTS):], alone):
        assert mixed["output_ids"] == single["output_ids"]
        assert "npr" not in mixed["meta_info"]


def test_sampled_with_a_seed_equals_the_reference(engine, hf):
    """Per-branch RNG streams (npr.forkjoin.derive_seed of the request's sampling_seed, block, branch)."""
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure

    script = [[3, 5], [2, 4, 1]]
    model, tokenizer = hf
    ref = Decoder(model, tokenizer, DecodingConfig(max_branches=5, max_new_tokens=MAX_NEW)).generate(
        [PROMPTS[0]], SamplingParams(temperature=0.8, top_p=0.95, seed=7), script=ScriptedStructure(script))[0]
    params = npr_sampling_params({"max_new_tokens": MAX_NEW, "temperature": 0.8, "top_p": 0.95, "sampling_seed": 7},
                                 script=script, max_branches=5)
    outs = engine.generate(input_ids=[PROMPTS[0]] * 2, sampling_params=[params] * 2, return_logprob=True)
    for out in outs:  # the same seed gives the same trajectory, whatever else runs in the batch
        assert_matches(out, ref)


def test_refused_fork_goes_on_sequentially_like_the_reference(engine, hf):
    script, limits = [[3, 5]], {"min_fork_budget": MAX_NEW}  # never enough budget left to fork
    ref = reference(hf, PROMPTS[:1], [script], **limits)[0]
    assert ref.stats["num_forks"] == 0 and ref.refused_forks
    out = engine.generate(input_ids=PROMPTS[0], sampling_params=npr_params(script, **limits), return_logprob=True)
    assert_matches(out, ref)


def test_budget_bounds_like_the_reference(engine, hf):
    script, limits = [[3, 5], [2, 4, 1]], {"max_new_tokens": 30, "max_total_tokens": 40}
    ref = reference(hf, PROMPTS[:1], [script], **limits)[0]
    assert ref.finish_reason == "length"
    out = engine.generate(input_ids=PROMPTS[0], sampling_params=npr_params(script, **limits), return_logprob=True)
    assert_matches(out, ref)
    assert out["meta_info"]["finish_reason"]["type"] == "length"


def test_abort_mid_request_releases_everything(engine, hf):
    scripts = [[[2, 3]], [[150] * 5, [150] * 5], [[3, 1, 2]]]  # the middle one has 300+ steps left at the abort

    def params(script):
        return npr_params(script, max_new=1000, max_total_tokens=1500)

    async def run():
        tasks = [asyncio.ensure_future(engine.async_generate(input_ids=p, sampling_params=params(s),
                                                             return_logprob=True, rid=f"abort-me-{i}"))
                 for i, (p, s) in enumerate(zip(PROMPTS[:3], scripts)) if i != 1]
        stream = await engine.async_generate(input_ids=PROMPTS[1], sampling_params=params(scripts[1]),
                                             return_logprob=True, rid="abort-me-1", stream=True)
        await stream.__anext__()  # running: its trunk has streamed
        await abort_while_paused(engine, ["abort-me-1"])
        last = None
        async for last in stream:  # not incremental: the last chunk is the whole output
            pass
        first, third = await asyncio.gather(*tasks)
        return [first, last, third]

    outs = engine.loop.run_until_complete(run())
    refs = reference(hf, PROMPTS[:3], scripts, max_new_tokens=1000, max_total_tokens=1500)
    assert_matches(outs[0], refs[0])
    assert_matches(outs[2], refs[2])
    assert outs[1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert_partial_of(PROMPTS[1], outs[1]["output_ids"], refs[1].token_ids, tags_of(hf))  # a clean cut
    time.sleep(1.0)  # idle: SGLang's strict leak check of KV slots and req_to_token rows runs now
    again = engine.generate(input_ids=PLAIN[0], sampling_params={"max_new_tokens": 4, "temperature": 0.0})
    assert len(again["output_ids"]) == 4  # the scheduler is alive: no leak was found


def test_unsupported_request_features_are_refused(engine):
    with pytest.raises(ValueError, match=r"do not support \['top_logprobs_num > 0'\]"):
        engine.generate(input_ids=PROMPTS[0], sampling_params=npr_params([[2, 2]]), return_logprob=True,
                        top_logprobs_num=2)
    with pytest.raises(ValueError, match="script block 0 has 6 branches"):
        engine.generate(input_ids=PROMPTS[0], sampling_params={"max_new_tokens": 8, "custom_params": {
            "npr": {"script": "[[1,1,1,1,1,1]]"}}})


def test_prompts_share_the_radix_cache_and_only_prompt_kv_enters_it(engine, hf):
    """An NPR prompt prefills through SGLang's extend with a radix-cache match: the same prompt again is
    served from the cache (and decodes the same); the tree holds the prompt, never the fork-join KV, so
    a plain request continuing the NPR output matches the prompt only."""
    prompt = [(11 * i) % 280 + 3 for i in range(40)]
    script = [[3, 5]]
    assert engine.flush_cache().success
    first = engine.generate(input_ids=prompt, sampling_params=npr_params(script), return_logprob=True)
    second = engine.generate(input_ids=prompt, sampling_params=npr_params(script), return_logprob=True)
    assert first["meta_info"]["cached_tokens"] == 0
    assert second["meta_info"]["cached_tokens"] >= len(prompt) - 1  # SGLang recomputes at most the last token
    assert_matches(second, reference(hf, [prompt], [script])[0])
    assert second["output_ids"] == first["output_ids"]
    follow = engine.generate(input_ids=prompt + first["output_ids"], sampling_params={"max_new_tokens": 2,
                                                                                       "temperature": 0.0})
    assert follow["meta_info"]["cached_tokens"] <= len(prompt)
