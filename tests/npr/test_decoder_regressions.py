"""Regressions of the four decoder bugs the fork-join protocol removed, and a property test: random
scripts x budgets x abort points on the tiny model never raise, keep both limits, and give finite
log-probs equal to `structured_logprobs` of the emitted trajectory (float64, <= 1e-9)."""

import json
import math
import subprocess
import sys

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npr import structured_logprobs
from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
from tests.cases import prompt_ids

TOL = 1e-9


def assert_exact(model, result):
    assert all(math.isfinite(x) for x in result.logprobs), result.logprobs
    with torch.no_grad():
        want = structured_logprobs(model, result.layout)
    got = torch.tensor(result.logprobs, dtype=torch.float64)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL if len(got) else True


def count_steps(abort_at):
    seen = {}

    def should_abort(index, request):
        seen[index] = seen.get(index, 0) + 1
        return abort_at is not None and seen[index] > abort_at

    return should_abort


def test_bug1_total_budget_is_never_exceeded_and_never_crashes(model64, tokenizer):
    prompt = prompt_ids(tokenizer)
    config = DecodingConfig(max_new_tokens=200, max_total_tokens=30, min_fork_budget=0)
    [result] = Decoder(model64, tokenizer, config).generate([prompt], SamplingParams(temperature=0.0),
                                                            script=ScriptedStructure([[6, 2, 4]]))
    assert result.stats["total_tokens"] == len(result.token_ids) <= 30
    assert result.finish_reason == "length"
    assert_exact(model64, result)


def test_bug2_abort_inside_a_block_leaves_no_nan(model64, tokenizer):
    decoder = Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=200, min_fork_budget=0))
    for written in (1, 5, 9, 14, 17):  # abort once the open block's branches hold that many tokens
        def should_abort(index, request, written=written):
            return sum(len(b.tokens) for b in request.branches) >= written

        [result] = decoder.generate([prompt_ids(tokenizer)], SamplingParams(temperature=0.0),
                                    script=ScriptedStructure([[6, 2, 4]]), should_abort=should_abort)
        assert result.finish_reason == "abort"
        assert result.layout.num_forks == 1 and result.layout.issues[-1].name == "unclosed_block"  # inside it
        assert_exact(model64, result)
        assert decoder.last_memory["used_slots"] == 0


def test_bug3_copies_of_a_prompt_get_their_own_samples(model32, tokenizer):
    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=24))
    prompts = [prompt_ids(tokenizer)] * 8
    for seed in (None, 0):
        outputs = [tuple(r.token_ids) for r in decoder.generate(prompts, SamplingParams(temperature=1.0, seed=seed))]
        assert len(set(outputs)) > 4, f"seed={seed}: only {len(set(outputs))} distinct samples of 8"
    again = [r.token_ids for r in decoder.generate(prompts, SamplingParams(temperature=1.0, seed=0))]
    assert again == [r.token_ids for r in decoder.generate(prompts, SamplingParams(temperature=1.0, seed=0))]
    # a request's stream depends on its index, not on the batch around it
    [alone] = decoder.generate(prompts[:1], SamplingParams(temperature=1.0, seed=0))
    assert alone.token_ids == again[0]


def test_bug4_memory_follows_the_tokens_not_the_budget(model32, tokenizer):
    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=10**9))  # a budget nobody can allocate
    [result] = decoder.generate([prompt_ids(tokenizer)], SamplingParams(temperature=0.0),
                                script=ScriptedStructure([[2, 3]]))
    assert result.finish_reason == "stop"
    used = len(result.prompt_ids) + len(result.token_ids)
    assert decoder.last_memory["high_water"] <= used + 8  # slots follow the tokens written
    small = decoder.last_memory["pool_slots"]
    decoder.generate([prompt_ids(tokenizer)] * 16, SamplingParams(temperature=0.0), script=ScriptedStructure([[9, 9]]))
    assert decoder.last_memory["pool_slots"] > small  # the pool grew with the work


BATCH_128 = """
import json, resource, torch
from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
from npr.tiny import make_tiny_model, make_tiny_tokenizer
tok = make_tiny_tokenizer()
model = make_tiny_model(tok, seed=0, dtype=torch.float32)
prompt = tok.apply_chat_template([{"role": "user", "content": "What is 6 times 7?"}], add_generation_prompt=True)
prompt = list(prompt if isinstance(prompt, list) else prompt["input_ids"])
decoder = Decoder(model, tok, DecodingConfig())  # the default budget: max_new_tokens 1024
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = decoder.generate([prompt] * 128, SamplingParams(temperature=0.0), script=ScriptedStructure([[3, 2], [2, 2, 2]]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_growth_mb": (after - before) / 1024, "memory": decoder.last_memory,
                  "tokens": sum(len(r.token_ids) for r in results), "done": sum(r.finish_reason == "stop" for r in results)}))
"""


def test_bug4_batch_of_128_stays_within_a_few_hundred_mb():
    proc = subprocess.run([sys.executable, "-c", BATCH_128], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["done"] == 128
    assert report["memory"]["pool_bytes"] < 64 * 2**20, report
    assert report["peak_growth_mb"] < 400, report


blocks = st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=4), min_size=1, max_size=2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=blocks, max_new=st.integers(6, 80), total=st.one_of(st.none(), st.integers(6, 150)),
       min_fork=st.integers(0, 12), abort_at=st.one_of(st.none(), st.integers(0, 45)),
       temperature=st.sampled_from([0.0, 1.0]), width=st.integers(2, 5))
def test_property_random_scripts_budgets_aborts(model64, tokenizer, lengths, max_new, total, min_fork, abort_at,
                                                temperature, width):
    config = DecodingConfig(max_branches=width, max_new_tokens=max_new, max_total_tokens=total,
                            min_fork_budget=min_fork)
    decoder = Decoder(model64, tokenizer, config)
    results = decoder.generate([prompt_ids(tokenizer), prompt_ids(tokenizer, "Hi")],
                               SamplingParams(temperature=temperature, seed=1), script=ScriptedStructure(lengths),
                               should_abort=count_steps(abort_at))
    assert decoder.last_memory["used_slots"] == 0
    for result in results:
        assert result.stats["total_tokens"] == len(result.token_ids) <= config.total_budget
        assert result.stats["critical_path_tokens"] <= max_new
        if result.token_ids:
            assert_exact(model64, result)
