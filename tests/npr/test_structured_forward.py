"""Structured-forward equivalence on the tiny model in float64 (DESIGN §4): one forward over the whole
trajectory with dense_mask + layout positions equals, per branch, a forward over the prefix and that
branch alone, and, everywhere, the engine's KV-cache semantics. A plain causal mask must fail."""

import pytest
import torch

from npr.layout import build_layout, render_block_text
from npr.masks import dense_mask
from tests.reference import kv_cache_forward

TOL = dict(rtol=0, atol=1e-9)


def make_trajectory(tokenizer, templates, blocks):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 6 times 7?"}],
                                           add_generation_prompt=True, tokenize=True)
    if not isinstance(prompt, list):
        prompt = prompt["input_ids"]
    text = "Let me plan." + "\n".join(render_block_text(*b) for b in blocks) + " The answer is \\boxed{42}."
    return list(prompt), templates.text_to_ids(text)


BLOCKS = [
    (["1: multiply", "2: add 6 seven times", "3: use 7*6"], [" 6*7=42", " 6+6+6+6+6+6+6 = 42 indeed", " 42"],
     " all agree"),
    (["1: check", "2: recheck"], [" ok", " fine, 42"], " done"),
]


@pytest.fixture(scope="module")
def trajectory(tokenizer, templates, tags):
    prompt, response = make_trajectory(tokenizer, templates, BLOCKS)
    layout = build_layout(prompt + response, tags, len(prompt))
    assert layout.is_valid, layout.error
    assert layout.num_forks == 2
    return layout


def structured_logits(model, layout, mask=None):
    mask = dense_mask(layout) if mask is None else mask
    with torch.no_grad():
        out = model(layout.token_ids[None], position_ids=layout.position_ids[None], attention_mask=mask[None, None])
    return out.logits[0]


def test_each_branch_equals_prefix_plus_branch_alone(model64, trajectory):
    full = structured_logits(model64, trajectory)
    for block_index, spans in enumerate(trajectory.branch_spans()):
        region = (spans[0][0], spans[-1][1])
        for start, end in spans:
            keep = torch.tensor([i for i in range(end) if i < region[0] or start <= i])
            if block_index == 0:  # everything kept is plain causal: no mask at all
                with torch.no_grad():
                    alone = model64(trajectory.token_ids[keep][None],
                                    position_ids=trajectory.position_ids[keep][None]).logits[0]
            else:  # earlier blocks keep their own structure
                sub = type(trajectory)(trajectory.token_ids[keep], trajectory.position_ids[keep],
                                       trajectory.block_id[keep], trajectory.branch_id[keep], 0)
                alone = structured_logits(model64, sub)
            torch.testing.assert_close(alone[-(end - start):], full[start:end], **TOL)


def test_whole_trajectory_equals_kv_cache_engine_semantics(model64, trajectory):
    full = structured_logits(model64, trajectory)
    engine = kv_cache_forward(model64, trajectory)
    torch.testing.assert_close(engine, full, **TOL)


def test_plain_causal_mask_fails_the_same_check(model64, trajectory):
    n = len(trajectory)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    wrong = structured_logits(model64, trajectory, mask=causal)
    engine = kv_cache_forward(model64, trajectory)
    second_branch = trajectory.branch_spans()[0][1]
    diff = (wrong[second_branch[0]:second_branch[1]] - engine[second_branch[0]:second_branch[1]]).abs().max()
    assert diff > 1e-3
    first_branch = trajectory.branch_spans()[0][0]  # the first branch sees no sibling: still equal
    torch.testing.assert_close(wrong[first_branch[0]:first_branch[1]], engine[first_branch[0]:first_branch[1]], **TOL)


def test_sequential_positions_fail_the_same_check(model64, trajectory):
    n = len(trajectory)
    wrong_pos = type(trajectory)(trajectory.token_ids, torch.arange(n), trajectory.block_id, trajectory.branch_id, 0)
    diff = (structured_logits(model64, wrong_pos) - kv_cache_forward(model64, trajectory)).abs().max()
    assert diff > 1e-3


def test_structured_logprobs_packs_several_layouts_exactly(model64, tokenizer, templates, tags, trajectory):
    """One packed forward over several trajectories equals a forward over each alone (float64)."""
    from npr import structured_logprobs

    other_prompt, other = make_trajectory(tokenizer, templates, BLOCKS[:1])
    second = build_layout(other_prompt + other, tags, len(other_prompt))
    plain = build_layout(other_prompt + other[:5], tags, len(other_prompt))  # no block at all
    with torch.no_grad():
        packed = structured_logprobs(model64, [trajectory, second, plain])
        alone = [structured_logprobs(model64, x) for x in (trajectory, second, plain)]
    for got, want, layout in zip(packed, alone, (trajectory, second, plain)):
        assert got.shape == (len(layout) - layout.response_start,)
        torch.testing.assert_close(got, want, **TOL)
    with pytest.raises(ValueError, match="response_start 0"):
        structured_logprobs(model64, build_layout(other, tags, 0))
