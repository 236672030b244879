"""Backend "npr" on the real sglang.Engine (CPU, float32, tiny Qwen3 in a temp dir): plain requests
decode exactly like SGLang's own torch_native backend and like transformers; the server reports the
plugin with fork-join on under SGLang's defaults (overlap scheduler included); bad NPR parameters are
refused with a message naming the value, and the engine stays healthy.

Two engine start-ups (~45 s each): the stock torch_native run only records its outputs."""

import pytest
import torch

from tests.hosts import require_host
from tests.sglang_npr.engines import cpu_engine, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

PROMPTS = [[1, 5, 9, 12, 40, 41], [3, 4], [200, 17, 99, 5, 5, 5, 5, 61, 7]]
NEW_TOKENS = 12
GREEDY = {"max_new_tokens": NEW_TOKENS, "temperature": 0.0}
SAMPLED = {"max_new_tokens": NEW_TOKENS, "temperature": 0.8, "top_p": 0.9}  # engines share random_seed


def _run(engine, sampling):
    outs = engine.generate(input_ids=PROMPTS, sampling_params=sampling, return_logprob=True)
    return [(o["output_ids"], [lp[0] for lp in o["meta_info"]["output_token_logprobs"]]) for o in outs]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="module")
def stock(model_path):
    with cpu_engine(model_path, "torch_native") as engine:
        return {"greedy": _run(engine, GREEDY), "sampled": _run(engine, SAMPLED)}


@pytest.fixture(scope="module")
def engine(model_path, stock):  # after `stock`: never two engines at once on 2 cores
    with cpu_engine(model_path, "npr") as engine:
        yield engine


def test_server_info_reports_the_plugin(engine):
    info = engine.get_server_info()
    assert info["attention_backend"] == "npr"
    npr_info = info["npr"]
    assert npr_info["plugin"] == "sglang_npr" and npr_info["inner_attention_backend"] == "torch_native"
    assert npr_info["fork_join_enabled"] is True and npr_info["refusal"] is None
    assert info["disable_overlap_schedule"] is False  # SGLang's default: the overlap scheduler runs


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_plain_requests_equal_stock_torch_native(engine, stock, mode):
    ours = _run(engine, GREEDY if mode == "greedy" else SAMPLED)
    for (ids, logprobs), (ref_ids, ref_logprobs) in zip(ours, stock[mode]):
        assert ids == ref_ids
        assert max(abs(a - b) for a, b in zip(logprobs, ref_logprobs)) <= 1e-5


def test_plain_greedy_equals_transformers(engine, model_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).eval()
    for (ids, logprobs), prompt in zip(_run(engine, GREEDY), PROMPTS):
        with torch.no_grad():
            full = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  eos_token_id=None, pad_token_id=0)
            logits = model(full).logits[0, len(prompt) - 1:-1].float()
        ref_ids = full[0, len(prompt):].tolist()
        assert ids == ref_ids
        ref_logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(ref_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(logprobs), ref_logprobs, atol=1e-4, rtol=0)


def test_bad_npr_parameters_are_refused_and_the_engine_stays_healthy(engine):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['branches'\]"):
        engine.generate(input_ids=PROMPTS[0], sampling_params={**GREEDY, "custom_params": {"npr": {"branches": 2}}})
    # the engine is still healthy afterwards
    assert len(engine.generate(input_ids=PROMPTS[1], sampling_params=GREEDY)["output_ids"]) == NEW_TOKENS
