"""verl_npr.batch: trajectories as verl's rollout fields — shapes and padding sides, NPR positions from
the layout, structure in per-sample multi_modal_inputs that concatenate to the packed kwargs, and an
all-zero response_mask row for an invalid trajectory."""

from types import SimpleNamespace

import pytest
import torch

from tests.hosts import require_host

pytestmark = pytest.mark.verl
require_host("verl")

from npr.layout import build_layout  # noqa: E402
from npr.masks import STRUCTURE_KEYS, attention_kwargs  # noqa: E402
from verl_npr.batch import Sample, make_data_proto, sample_fields, trains, training_error  # noqa: E402

BRANCHED = ("<guideline> <plan> a </plan> <plan> b </plan> </guideline> <step> h c </step> <step> h c c c </step> "
            "<takeaway> t </takeaway> x")


@pytest.fixture
def samples(sym, tags):
    out = []
    for prompt, response, valid in (("P P P", BRANCHED, True), ("P", "y z", True), ("P P", BRANCHED + " y", False)):
        p, r = sym(prompt), sym(response)
        out.append(Sample(p, r, build_layout(p + r, tags, len(p)), valid, [-0.5] * len(r)))
    return out


def test_data_proto_fields(samples):
    data = make_data_proto(samples, pad_token_id=0)
    b = data.batch
    prompt_len, response_len = 3, max(len(s.response_ids) for s in samples)
    assert b["prompts"].shape == (3, prompt_len) and b["responses"].shape == (3, response_len)
    assert b["input_ids"].shape == b["position_ids"].shape == b["attention_mask"].shape == (3, prompt_len + response_len)
    for row, s in enumerate(samples):
        keep = b["attention_mask"][row].bool()
        assert b["input_ids"][row, keep].tolist() == [*s.prompt_ids, *s.response_ids]
        assert torch.equal(b["position_ids"][row, keep], s.layout.position_ids)
        assert keep[prompt_len - len(s.prompt_ids)] and not keep[: prompt_len - len(s.prompt_ids)].any()  # left pad
        assert b["response_mask"][row].sum() == (len(s.response_ids) if s.is_valid else 0)
        assert torch.allclose(b["rollout_log_probs"][row, :len(s.response_ids)], torch.tensor(-0.5))
    assert not b["response_mask"][2].any()  # invalid: no gradient, left out of PAPO's statistics
    # per-sample structure pieces concatenate (verl's extract_multi_modal_inputs) to the packed kwargs
    packed = attention_kwargs([s.layout for s in samples])
    pieces = list(data.non_tensor_batch["multi_modal_inputs"])
    for key in STRUCTURE_KEYS:
        assert torch.equal(torch.cat([p[key] for p in pieces]), packed[key])
    assert "position_ids" not in pieces[0]  # positions travel in their own field


def test_branched_positions_repeat_inside_a_block(samples):
    fields = sample_fields(samples[0])
    positions = fields["position_ids"].tolist()
    assert len(positions) > len(set(positions))  # siblings share start positions


def test_bad_samples_name_the_problem(samples, sym, tags):
    s = samples[0]
    with pytest.raises(ValueError, match="build_layout"):
        Sample(s.prompt_ids, s.response_ids[:-1], s.layout)
    with pytest.raises(ValueError, match="one per response token"):
        Sample(s.prompt_ids, s.response_ids, s.layout, True, [0.0])
    with pytest.raises(ValueError, match="max_response_length"):
        make_data_proto(samples, 0, max_response_length=2)
    with pytest.raises(ValueError, match="at least one"):
        make_data_proto([], 0)


def test_the_row_trains_rule(sym, tags):
    """One rule for every path (agent loop, Sample.from_decoded): valid layout, stopped by itself, non-empty."""
    p, good, broken = sym("P"), sym(BRANCHED), sym("<guideline> <plan> a </plan> </guideline> x")
    layout = build_layout(p + good, tags, len(p))
    assert trains(layout, "stop", len(good)) and training_error(layout, "stop", len(good)) is None
    assert training_error(layout, "length", len(good)) == "finish_reason 'length'"
    assert training_error(layout, "abort", len(good)) == "finish_reason 'abort'"
    assert training_error(build_layout(p, tags, len(p)), "stop", 0) == "empty response"
    bad = build_layout(p + broken, tags, len(p))
    assert not bad.is_valid and training_error(bad, "stop", len(broken)) == bad.error

    def decoded(finish_reason):  # an npr.decoding result's fields
        return SimpleNamespace(prompt_ids=p, token_ids=good, logprobs=[-0.1] * len(good), layout=layout,
                               finish_reason=finish_reason)

    assert Sample.from_decoded(decoded("stop")).is_valid and not Sample.from_decoded(decoded("length")).is_valid
