"""The reference fork-join decoder: train/inference consistency (decoder log-probs == one structured
forward), equality with transformers greedy decoding, fallbacks and limits, KV ownership, seeding."""

import random

import pytest
import torch

from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
from npr.decoding.sampler import sample_batch
from npr.forkjoin import derive_seed
from npr import structured_logprobs
from tests.cases import prompt_ids

CONSISTENCY_TOL = 1e-9  # float64; the contract is 1e-6


def trainer_logprobs(model, layout, mask=None):
    """What the trainer computes: one forward with the structured mask (or `mask`) and layout positions,
    then shifted log-softmax gathered at the response tokens."""
    if mask is None:
        with torch.no_grad():
            return structured_logprobs(model, layout)
    with torch.no_grad():
        logits = model(layout.token_ids[None], position_ids=layout.position_ids[None],
                       attention_mask=mask[None, None]).logits[0]
    start = layout.response_start
    lp = torch.log_softmax(logits.double(), -1)[start - 1:-1]
    return lp.gather(1, layout.token_ids[start:, None])[:, 0]


class Forcer:
    """Test processor: forces exact trunk tokens and, per branch index, exact branch content."""

    def __init__(self, trunk, branches=None, eos=None):
        self.trunk, self.branches, self.eos = trunk, branches or {}, eos

    def __call__(self, seq, logits):
        if seq.is_trunk:
            wanted = self.trunk[len(seq.tokens)] if len(seq.tokens) < len(self.trunk) else self.eos
        else:
            content = self.branches.get((seq.request.num_forks, seq.branch), [])
            written = len(seq.tokens) - seq.header_len
            wanted = content[written] if written < len(content) else self.eos
        out = torch.full_like(logits, float("-inf"))
        out[wanted] = 0.0
        return out


@pytest.fixture(scope="module")
def decoder64(model64, tokenizer):
    return Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=256))


def assert_consistent(model, result):
    want = trainer_logprobs(model, result.layout)
    got = torch.tensor(result.logprobs, dtype=torch.float64)
    assert got.shape == want.shape and not torch.isnan(got).any()
    assert (got - want).abs().max().item() < CONSISTENCY_TOL


SCRIPTS = [[[2, 3]], [[3, 1, 4]], [[2, 2, 2, 2, 2]], [[4, 1], [1, 1, 5], [3, 3, 3, 3]], [[5, 0, 2], [2, 6]]]


@pytest.mark.parametrize("lengths", SCRIPTS, ids=[str(s) for s in SCRIPTS])
def test_decoder_logprobs_equal_structured_forward(decoder64, model64, tokenizer, tags, lengths):
    [result] = decoder64.generate([prompt_ids(tokenizer)], SamplingParams(temperature=0.0, seed=0),
                                  script=ScriptedStructure(branch_lengths=lengths))
    assert result.finish_reason == "stop"
    assert result.layout.is_valid, result.layout.error
    assert result.stats["num_forks"] == len(lengths) and result.stats["max_width"] == max(map(len, lengths))
    assert result.blocks == [["closed"] * len(b) for b in lengths]
    assert result.layout.num_forks == len(lengths)
    # branch lengths: header (<step> \n i :) + content + </step>
    spans = result.layout.branch_spans()
    assert [[e - s for s, e in block] for block in spans] == [[4 + n + 1 for n in b] for b in lengths]
    assert_consistent(model64, result)
    # critical path = total minus what the parallel branches saved
    saved = sum(sum(4 + n + 1 for n in b) - max(4 + n + 1 for n in b) for b in lengths)
    assert result.stats["critical_path_tokens"] == result.stats["total_tokens"] - saved
    assert result.stats["total_tokens"] == len(result.token_ids)


def test_sampled_trajectories_are_consistent_too(model64, tokenizer):
    decoder = Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=256))
    results = decoder.generate([prompt_ids(tokenizer), prompt_ids(tokenizer, "Add 2 and 3.")],
                               SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=3),
                               script=ScriptedStructure(branch_lengths=[[4, 2, 3], [3, 3]]))
    for result in results:
        assert result.layout.is_valid
        assert_consistent(model64, result)


def test_plain_causal_forward_disagrees(decoder64, model64, tokenizer):
    [result] = decoder64.generate([prompt_ids(tokenizer)], SamplingParams(temperature=0.0),
                                  script=ScriptedStructure(branch_lengths=[[3, 4, 5]]))
    n = len(result.layout)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    wrong = trainer_logprobs(model64, result.layout, mask=causal)
    got = torch.tensor(result.logprobs, dtype=torch.float64)
    assert (got - wrong).abs().max().item() > 1e-3


def test_no_tags_greedy_equals_transformers_generate(model64, tokenizer, tags):
    decoder = Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=40))
    texts = ["What is 6 times 7?", "Hello", "Solve x^2=4", "Name a prime."]
    prompts = [prompt_ids(tokenizer, t) for t in texts]
    results = decoder.generate(prompts, SamplingParams(temperature=0.0))  # one batch
    for text, prompt, result in zip(texts, prompts, results):
        want = model64.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)[0, len(prompt):]
        assert result.token_ids == want.tolist()
        assert result.stats == {"total_tokens": 40, "critical_path_tokens": 40, "num_forks": 0, "max_width": 1}
        assert result.finish_reason == "length"
        if text != "Name a prime.":
            assert not set(result.token_ids) & tags.all
    # the last one writes stray tags (no fork): they are plain content and change nothing
    assert set(results[-1].token_ids) & tags.all and not results[-1].layout.is_valid


def ids_of(tokenizer, tags, spec):
    """'<guideline> <plan> a </plan>' -> ids; plain words are encoded as text."""
    tag_of = tags.by_text
    out = []
    for word in spec.split():
        out += [tag_of[word]] if word in tag_of else tokenizer.encode(word, add_special_tokens=False)
    return out


def run_forced(model, tokenizer, tags, trunk, branches=None, **config):
    decoder = Decoder(model, tokenizer, DecodingConfig(**{"max_new_tokens": 200, **config}))
    forcer = Forcer(ids_of(tokenizer, tags, trunk),
                    {k: ids_of(tokenizer, tags, v) if isinstance(v, str) else v for k, v in (branches or {}).items()},
                    eos=tokenizer.eos_token_id)
    [result] = decoder.generate([prompt_ids(tokenizer)], SamplingParams(temperature=0.0), processors=[forcer])
    assert decoder.last_memory["used_slots"] == 0
    return result


@pytest.mark.parametrize("plans, max_branches", [(0, 5), (6, 5), (3, 2)])
def test_invalid_plan_count_continues_sequentially(model64, tokenizer, tags, plans, max_branches):
    trunk = "<guideline> " + "<plan> a </plan> " * plans + "</guideline> <step> b </step> answer"
    result = run_forced(model64, tokenizer, tags, trunk, max_branches=max_branches)
    assert result.finish_reason == "stop" and result.stats["num_forks"] == 0
    assert result.layout.branch_id.eq(0).all()
    assert [i.name for i in result.layout.issues][:1] == ["plan_count"]
    assert any("plans" in note for note in result.notes)
    assert_consistent(model64, result)


def test_nesting_inside_a_step_does_not_fork(model64, tokenizer, tags):
    result = run_forced(model64, tokenizer, tags, "<guideline> <plan> a </plan> <plan> b </plan> </guideline> "
                        "<takeaway> </takeaway> done", {(1, 1): "x <guideline> <plan> y </plan> </guideline> z </step>",
                                             (1, 2): "w </step>"})
    assert result.finish_reason == "stop" and result.stats["num_forks"] == 1
    assert [i.name for i in result.layout.issues] == ["nested_guideline"]
    assert result.blocks == [["closed", "closed"]]
    assert_consistent(model64, result)


def test_stray_step_tag_ends_the_branch_unclosed(model64, tokenizer, tags):
    result = run_forced(model64, tokenizer, tags, "<guideline> <plan> a </plan> <plan> b </plan> </guideline> "
                        "<takeaway> </takeaway> done", {(1, 1): "x <step>", (1, 2): "w </step>"})
    assert result.blocks == [["stray", "closed"]]
    assert [i.name for i in result.layout.issues] == ["unclosed_step"]
    assert any("dropped" in note for note in result.notes)
    assert_consistent(model64, result)


def test_eos_inside_a_branch_stops_the_request(model64, tokenizer, tags):
    eos = tokenizer.eos_token_id
    result = run_forced(model64, tokenizer, tags, "<guideline> <plan> a </plan> <plan> b </plan> </guideline>",
                        {(1, 1): ids_of(tokenizer, tags, "x") + [eos], (1, 2): "w w w </step>"})
    assert result.finish_reason == "stop" and result.blocks == [["stop", "closed"]]
    assert result.token_ids.count(eos) == 1 and tags.takeaway_open not in result.token_ids
    assert [i.name for i in result.layout.issues] == ["unclosed_step", "unclosed_block"]
    assert_consistent(model64, result)


@pytest.mark.parametrize("limit", [{"max_new_tokens": 20}, {"max_total_tokens": 26}])
def test_budget_exhaustion_mid_branch(model64, tokenizer, tags, limit):
    result = run_forced(model64, tokenizer, tags, "<guideline> <plan> a </plan> <plan> b </plan> </guideline> "
                        "<takeaway> </takeaway> done", {(1, 1): "x " * 30 + "</step>", (1, 2): "y " * 30 + "</step>"},
                        **limit)
    assert result.finish_reason == "length"
    assert result.blocks == [["length", "length"]]
    assert result.layout.issues[-1].name == "unclosed_block"
    if "max_new_tokens" in limit:
        assert result.stats["critical_path_tokens"] == 20
    else:
        assert result.stats["total_tokens"] == 26 == len(result.token_ids)
    assert_consistent(model64, result)


def test_refused_fork_for_budget_goes_on_sequentially(model64, tokenizer, tags):
    result = run_forced(model64, tokenizer, tags, "<guideline> <plan> a </plan> <plan> b </plan> </guideline> "
                        "<step> x </step> end", max_new_tokens=30, min_fork_budget=25)
    assert result.stats["num_forks"] == 0 and result.finish_reason == "stop"
    assert result.layout.issues[0].name == "fork_refused"
    assert any("min_fork_budget" in note for note in result.notes)
    assert result.layout.branch_id.eq(0).all()
    assert_consistent(model64, result)


def test_batch_mixing_parallel_and_plain_equals_each_alone(model64, tokenizer):
    decoder = Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=60))
    prompts = [prompt_ids(tokenizer), prompt_ids(tokenizer, "Hello"), prompt_ids(tokenizer, "Why?")]
    scripts = [ScriptedStructure([[3, 5]]), None, ScriptedStructure([[2, 2, 2], [1, 4]])]
    batched = decoder.generate(prompts, SamplingParams(temperature=0.0), script=scripts)
    for prompt, script, got in zip(prompts, scripts, batched):
        [alone] = decoder.generate([prompt], SamplingParams(temperature=0.0), script=[script])
        assert got.token_ids == alone.token_ids and got.finish_reason == alone.finish_reason
        assert max(abs(a - b) for a, b in zip(got.logprobs, alone.logprobs)) < 1e-10
        assert_consistent(model64, got)
    assert batched[1].stats["num_forks"] == 0 and batched[2].stats["num_forks"] == 2


def test_requests_queue_when_the_pool_is_small(model64, tokenizer):
    prompt = prompt_ids(tokenizer)
    decoder = Decoder(model64, tokenizer, DecodingConfig(max_new_tokens=30, max_total_tokens=40,
                                                        max_kv_slots=len(prompt) + 41 + 5))
    results = decoder.generate([prompt] * 3, SamplingParams(temperature=0.0), script=ScriptedStructure([[2, 3]]))
    assert all(r.token_ids == results[0].token_ids for r in results)
    assert decoder.last_memory["used_slots"] == 0
    with pytest.raises(ValueError, match="max_kv_slots"):
        Decoder(model64, tokenizer, DecodingConfig(max_kv_slots=10)).generate([prompt])


def test_same_seed_same_output_other_seed_differs(model32, tokenizer):
    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=80))
    script = ScriptedStructure([[6, 6, 6]])
    run = lambda seed: decoder.generate([prompt_ids(tokenizer)], SamplingParams(temperature=1.0, seed=seed),  # noqa
                                        script=script)[0].token_ids
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_per_prompt_seeds_sample_alone_whatever_shares_the_call(model32, tokenizer):
    """seeds=[...]: prompt i samples from (seeds[i], block, branch) as an SGLang request with that
    sampling_seed does, so its output does not depend on its index or on the other prompts."""
    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=60))
    script = ScriptedStructure([[5, 5, 5]])
    prompt, other = prompt_ids(tokenizer), prompt_ids(tokenizer)[:-1]
    sampling = SamplingParams(temperature=1.0, seed=0)
    alone = decoder.generate([prompt], sampling, script=script, seeds=[11])[0].token_ids
    both = decoder.generate([other, prompt], sampling, script=script, seeds=[12, 11])
    assert both[1].token_ids == alone
    assert decoder.generate([prompt], SamplingParams(temperature=1.0, seed=0), script=script)[0].token_ids \
        == decoder.generate([prompt], sampling, script=script, seeds=[0])[0].token_ids  # (seed, index 0)
    assert decoder.generate([prompt], sampling, script=script, seeds=[13])[0].token_ids != alone
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        decoder.generate([prompt], sampling, seeds=[1, 2])


def test_branch_seeds_differ_by_branch_index():
    assert len({derive_seed(0, 0, 1, b) for b in range(1, 6)}) == 5
    assert derive_seed(0, 0, 1, 1) == derive_seed(0, 0, 1, 1) != derive_seed(1, 0, 1, 1)
    assert derive_seed(0, 0, 1, 1) != derive_seed(0, 1, 1, 1)  # another request of the same call
    logits = torch.zeros(8, 1000)
    ones, counters = torch.ones(8), torch.arange(8)
    draws = [sample_batch(logits, ones, ones, torch.zeros(8, dtype=torch.long), torch.full((8,), key), counters).tolist()
             for key in (derive_seed(0, 0, 1, 1), derive_seed(0, 0, 1, 2))]
    assert draws[0] != draws[1]


def test_kv_ownership_randomized(model32, tokenizer, tags):
    """Random mixes of scripts, limits, sampling and aborts: every slot and row comes back."""
    rng = random.Random(0)
    for trial in range(12):
        config = DecodingConfig(max_branches=rng.choice([2, 3, 5]), max_new_tokens=rng.randint(8, 70),
                                max_total_tokens=rng.choice([None, rng.randint(10, 120)]),
                                min_fork_budget=rng.choice([0, 8, 30]))
        decoder = Decoder(model32, tokenizer, config)
        count = rng.randint(1, 4)
        scripts = [rng.choice([None, ScriptedStructure([[rng.randint(0, 6) for _ in range(rng.randint(1, 5))]
                                                        for _ in range(rng.randint(1, 3))])]) for _ in range(count)]
        aborts = {i: rng.choice([None, rng.randint(1, 30)]) for i in range(count)}
        steps = {i: 0 for i in range(count)}

        def should_abort(index, request):
            steps[index] += 1
            return aborts[index] is not None and steps[index] >= aborts[index]

        prompts = [prompt_ids(tokenizer, "x" * rng.randint(1, 30)) for _ in range(count)]
        params = SamplingParams(temperature=rng.choice([0.0, 1.0]), seed=trial)
        results = decoder.generate(prompts, params, script=scripts, should_abort=should_abort)
        memory = decoder.last_memory
        assert memory["used_slots"] == 0, (trial, memory)
        for result in results:
            assert result.finish_reason in {"stop", "length", "abort"}
            assert len(result.token_ids) == len(result.logprobs) == result.stats["total_tokens"]
            assert result.stats["critical_path_tokens"] <= config.max_new_tokens
            assert result.stats["total_tokens"] <= config.total_budget
            assert result.stats["max_width"] <= config.max_branches
            assert len(result.layout) == len(result.prompt_ids) + len(result.token_ids)


def test_failure_mid_run_returns_every_slot(model32, tokenizer):
    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=50))
    calls = []

    def exploding(seq, logits):
        calls.append(1)
        if len(calls) > 12:
            raise RuntimeError("processor failed")
        return logits

    with pytest.raises(RuntimeError, match="processor failed"):
        decoder.generate([prompt_ids(tokenizer)] * 2, SamplingParams(temperature=0.0),
                         script=ScriptedStructure([[5, 5]]), processors=[exploding])
    assert decoder.last_memory["used_slots"] == 0


def test_bad_input_is_rejected_clearly(model32, tokenizer):
    decoder = Decoder(model32, tokenizer)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        decoder.generate([[]])
    with pytest.raises(TypeError, match="token ids"):
        decoder.generate(["hello"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="one per prompt"):
        decoder.generate([[1, 2]], script=[None, None])
