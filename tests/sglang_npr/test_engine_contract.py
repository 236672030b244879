"""The contract of `npr.forkjoin` (tests/forkjoin, `npr.forkjoin.contract`) run against the SGLang
scheduler integration: randomized scripted structures with randomized, often tight limits (refused
forks, budgets running out mid-branch or at a join) and aborts (sent while the scheduler is paused, so
they cannot race a request's end), in one batch on the real sglang.Engine with the overlap scheduler on.
Every output keeps the per-request invariants (`check_finish`: positions = build_layout's, budgets,
stats), its log-probs are the trainer's (`npr.structured_logprobs` of its layout, within 1e-4), the
finished ones equal the reference decoder, and no KV slot or req_to_token row is left behind."""

import asyncio
import random
import time

import pytest
import torch

from npr.forkjoin import Finish, Limits, Trajectory
from npr.forkjoin.contract import check_finish
from sglang_npr.client import npr_sampling_params
from tests.hosts import require_host
from tests.sglang_npr.engines import abort_while_paused, assert_partial_of, cpu_engine, save_tiny_model

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

NUM_CASES = 14
LOGPROB_TOL = 1e-4


def random_case(rng: random.Random) -> dict:
    blocks = [[rng.randint(0, 6) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 2))]
    max_new = rng.choice([12, 20, 30, 60])
    limits = {"max_branches": 4, "max_new_tokens": max_new,
              "max_total_tokens": rng.choice([None, max_new + 10, 2 * max_new]),
              "min_fork_budget": rng.choice([0, 4, 8, 25])}
    prompt = [rng.randrange(3, 300) for _ in range(rng.randint(1, 9))]
    return {"prompt": prompt, "script": blocks, "limits": limits}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="module")
def hf(model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(model_path))


@pytest.fixture(scope="module")
def runs(model_path):
    rng = random.Random(1234)
    cases = [random_case(rng) for _ in range(NUM_CASES)]
    aborted = {3, 9}
    for i in aborted:  # hundreds of steps left when the abort comes (see abort_while_paused)
        cases[i] = {"prompt": cases[i]["prompt"], "script": [[150, 150, 150, 150], [150, 150, 150, 150]],
                    "limits": {"max_branches": 4, "max_new_tokens": 1000, "max_total_tokens": None, "min_fork_budget": 0}}

    with cpu_engine(model_path, "npr") as engine:  # SGLang's defaults: the overlap scheduler runs
        async def run():
            tasks, streams = [], {}
            for i, case in enumerate(cases):
                limits = {k: v for k, v in case["limits"].items() if v is not None}
                params = npr_sampling_params({"max_new_tokens": limits["max_new_tokens"], "temperature": 0.0},
                                             script=case["script"], return_positions=True, **limits)
                call = engine.async_generate(input_ids=case["prompt"], sampling_params=params, return_logprob=True,
                                             rid=f"contract-{i}", stream=i in aborted)
                if i in aborted:
                    streams[i] = await call
                tasks.append(None if i in aborted else asyncio.ensure_future(call))
            for stream in streams.values():  # each aborted request is running: its trunk has streamed
                await stream.__anext__()
            await abort_while_paused(engine, [f"contract-{i}" for i in aborted])
            for i, stream in streams.items():
                last = None
                async for last in stream:  # not incremental: the last chunk is the whole output
                    pass
                future = asyncio.get_running_loop().create_future()
                future.set_result(last)
                tasks[i] = future
            return await asyncio.gather(*tasks)

        outs = engine.loop.run_until_complete(run())
        time.sleep(1.0)  # idle: SGLang's strict leak check runs; the next request fails if it found a leak
        alive = engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 3, "temperature": 0.0})
    assert len(alive["output_ids"]) == 3
    return cases, outs, aborted


def _finish(case, out) -> tuple[Finish, Limits]:
    limits = Limits(**{k: v for k, v in case["limits"].items()})
    npr = out["meta_info"]["npr"]
    logprobs = [lp[0] for lp in out["meta_info"]["output_token_logprobs"]]
    trajectory = Trajectory(prompt_ids=case["prompt"], token_ids=out["output_ids"], logprobs=logprobs,
                            finish_reason=npr["finish_reason"], stats=npr["stats"], refused_forks=npr["refused_forks"],
                            blocks=npr["blocks"], notes=npr["notes"])
    return Finish(None, npr["finish_reason"], trajectory, tuple(npr["positions"])), limits


def test_invariants_hold_for_every_output(runs, hf):
    from npr.templates import Templates

    cases, outs, _ = runs
    templates = Templates.from_tokenizer(hf[1])
    reasons = set()
    for case, out in zip(cases, outs):
        finish, limits = _finish(case, out)
        check_finish(finish, limits, templates)
        reasons.add(finish.reason)
    assert {"stop", "length", "abort"} <= reasons  # the random limits reached every ending
    npr = [out["meta_info"]["npr"] for out in outs]
    assert any(r["stats"]["num_forks"] >= 2 for r in npr) and any(r["refused_forks"] for r in npr)


def test_logprobs_are_the_trainers(runs, hf):
    from npr import structured_logprobs

    cases, outs, _ = runs
    model, tokenizer = hf
    for case, out in zip(cases, outs):
        finish, limits = _finish(case, out)
        if not finish.trajectory.token_ids:
            continue
        layout = finish.trajectory.layout(tokenizer_tags(tokenizer), limits.max_branches)
        with torch.no_grad():
            trainer = structured_logprobs(model, layout)
        assert torch.allclose(trainer, torch.tensor(finish.trajectory.logprobs, dtype=trainer.dtype),
                              atol=LOGPROB_TOL, rtol=0)


def test_finished_outputs_equal_the_reference_and_aborts_are_prefixes(runs, hf):
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure

    cases, outs, aborted = runs
    model, tokenizer = hf
    for i, (case, out) in enumerate(zip(cases, outs)):
        config = DecodingConfig(**{k: v for k, v in case["limits"].items()})
        ref = Decoder(model, tokenizer, config).generate(
            [case["prompt"]], SamplingParams(temperature=0.0), script=ScriptedStructure(case["script"]))[0]
        if i in aborted:
            assert out["meta_info"]["finish_reason"]["type"] == "abort"
            assert_partial_of(case["prompt"], out["output_ids"], ref.token_ids, tokenizer_tags(tokenizer), 4)
            continue
        assert out["output_ids"] == ref.token_ids, f"case {i}: {case}"
        assert out["meta_info"]["npr"]["stats"] == ref.stats
        assert out["meta_info"]["npr"]["refused_forks"] == ref.refused_forks


def tokenizer_tags(tokenizer):
    from npr.schema import TagIds

    return TagIds.from_tokenizer(tokenizer)
