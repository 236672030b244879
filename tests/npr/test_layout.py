"""build_layout on hand-drawn sequences: exact positions / branches / blocks (DESIGN §3-4), malformed
sequences flagged with reason and offset, and a fuzz test that it never raises."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from npr.layout import build_layout, pack_layouts
from npr.masks import dense_mask
from npr.schema import TAGS
from tests.cases import THREE_AND_TWO, TWO_BRANCHES
from tests.reference import brute_force_mask


def test_two_branches_positions_and_branches(sym, tags):
    layout = build_layout(sym(TWO_BRANCHES), tags, response_start=3)
    assert layout.is_valid and layout.error is None and layout.num_forks == 1
    assert layout.position_ids.tolist() == [
        0, 1, 2,                      # prompt
        3, 4, 5, 6, 7, 8, 9, 10,      # guideline; g = 10 at </guideline>
        11, 12, 13, 14,               # branch 1 starts at g+1
        11, 12, 13, 14, 15, 16,       # branch 2 also starts at g+1
        17, 18, 19,                   # takeaway at g + max(4, 6) + 1
        20,
    ]
    assert layout.branch_id.tolist() == [0] * 11 + [1] * 4 + [2] * 6 + [0] * 4
    assert layout.block_id.tolist() == [0] * 3 + [1] * 22


def test_two_branches_mask(sym, tags):
    layout = build_layout(sym(TWO_BRANCHES), tags, response_start=3)
    mask = dense_mask(layout)
    assert mask.dtype == torch.bool and mask.shape == (25, 25)
    assert torch.equal(mask, brute_force_mask(layout))
    # branch 2's tokens (15..20) see the prefix (0..10) and themselves, never branch 1 (11..14)
    assert mask[17, :11].all() and not mask[17, 11:15].any() and mask[17, 15:18].all() and not mask[17, 18:].any()
    assert mask[13, :14].all() and not mask[13, 14:].any()  # branch 1 is plain causal
    assert mask[21, :22].all() and not mask[21, 22:].any()  # the takeaway sees every branch


def test_several_blocks_uneven_branches_and_separators(sym, tags):
    layout = build_layout(sym(THREE_AND_TWO), tags, response_start=1)
    assert layout.is_valid, layout.error
    assert layout.num_forks == 2
    assert layout.position_ids.tolist() == [
        0,
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,  # block 1 guideline
        12,                                 # separator before the first <step>: shared, g = 12
        13, 14, 15, 16,                     # branch 1 (its trailing separator included): L1 = 4
        13, 14, 15, 16, 17,                 # branch 2: L2 = 5
        13, 14, 15,                         # branch 3 (</step> then separator): L3 = 3
        18, 19, 20, 21,                     # takeaway at 12 + 5 + 1, then on one by one
        22, 23, 24, 25, 26, 27, 28, 29,     # block 2 guideline, g = 29
        30, 31, 32, 33,                     # L1 = 4
        30, 31,                             # L2 = 2
        34, 35, 36,
    ]
    assert layout.branch_id.tolist() == (
        [0] * 13 + [1] * 4 + [2] * 5 + [3] * 3 + [0] * 4 + [0] * 8 + [1] * 4 + [2] * 2 + [0] * 3
    )
    assert layout.block_id.tolist() == [0] + [1] * 28 + [2] * 17
    assert layout.branch_spans() == [[(13, 17), (17, 22), (22, 25)], [(37, 41), (41, 43)]]
    assert torch.equal(dense_mask(layout), brute_force_mask(layout))
    mask = dense_mask(layout)
    assert not mask[41, 37:41].any() and mask[41, :37].all()  # block 2 branch 2 sees all of block 1


def test_prompt_quoting_tags_is_shared(sym, tags):
    prompt = "Q <guideline> <plan> x </plan> </guideline> <step> Q"
    response = "r <guideline> <plan> p </plan> </guideline> <step> s </step> <takeaway> t </takeaway> ans"
    ids = sym(prompt + " " + response)
    layout = build_layout(ids, tags, response_start=8)
    assert layout.is_valid, layout.error
    assert layout.position_ids.tolist()[:8] == list(range(8))
    assert layout.branch_id.tolist()[:8] == [0] * 8 and layout.block_id.tolist()[:8] == [0] * 8
    assert layout.branch_id.tolist()[8:] == [0] * 6 + [1] * 3 + [0] * 4
    # parsing from 0 instead sees the prompt's tags and flags them
    assert not build_layout(ids, tags, response_start=0).is_valid


@pytest.mark.parametrize(
    "spec, max_branches, name, offset",
    [
        ("<guideline> <plan> x </plan> </guideline> <step> h <guideline> <plan> y </plan> </guideline> </step> "
         "<takeaway> t </takeaway>", 5, "nested_guideline", 7),
        ("<guideline> <plan> x </plan> </guideline>", 5, "unclosed_block", 5),
        ("<guideline> x </guideline> ans", 5, "plan_count", 2),
        ("<guideline> " + "<plan> x </plan> " * 6 + "</guideline> ans", 5, "plan_count", 19),
        ("<guideline> " + "<plan> x </plan> " * 3 + "</guideline> ans", 2, "plan_count", 10),
        ("<guideline> <plan> x </plan> <plan> y </plan> </guideline> <step> h </step> <takeaway> t </takeaway>",
         5, "step_count", 11),
        ("a </step> b", 5, "stray_tag", 1),
        ("<guideline> <plan> x </plan> </guideline> <step> h x", 5, "unclosed_block", 8),
        ("<guideline> <plan> x </plan> </guideline> <step> h </step> <takeaway> t", 5, "unclosed_takeaway", 10),
        ("<guideline> <plan> x </plan> <plan> y </plan> </guideline> <step> h <step> h </step> <takeaway> </takeaway>",
         5, "unclosed_step", 10),
    ],
    ids=["nested", "open-at-end", "zero-plans", "six-plans", "over-max", "steps-vs-plans", "stray-close",
         "cut-mid-branch", "open-takeaway", "step-not-closed"],
)
def test_malformed_is_flagged_with_reason_and_offset(sym, tags, spec, max_branches, name, offset):
    ids = sym(spec)
    layout = build_layout(ids, tags, 0, max_branches=max_branches)
    assert not layout.is_valid
    assert (layout.issues[0].name, layout.issues[0].offset) == (name, offset), layout.issues
    assert name in layout.error and f"offset {offset}" in layout.error
    assert len(layout.position_ids) == len(ids)


def test_rejected_guideline_continues_sequentially(sym, tags):
    ids = sym("<guideline> x </guideline> <step> a </step> <takeaway> b </takeaway>")
    layout = build_layout(ids, tags, 0)
    assert layout.position_ids.tolist() == list(range(len(ids)))
    assert layout.branch_id.tolist() == [0] * len(ids) and layout.num_forks == 0


def test_cut_mid_branch_keeps_branch_positions(sym, tags):
    ids = sym("<guideline> <plan> x </plan> <plan> y </plan> </guideline> <step> h </step> <step> h h")
    layout = build_layout(ids, tags, 0)
    assert layout.position_ids.tolist()[8:] == [8, 9, 10, 8, 9, 10]  # g = 7
    assert layout.branch_id.tolist()[8:] == [1, 1, 1, 2, 2, 2]


def test_refused_fork_is_sequential(sym, tags):
    ids = sym("<guideline> <plan> x </plan> </guideline> <step> h </step> <takeaway> t </takeaway>")
    layout = build_layout(ids, tags, 0, refused_forks={4})
    assert layout.branch_id.tolist() == [0] * len(ids)
    assert layout.issues[0].name == "fork_refused"
    assert build_layout(ids, tags, 0).is_valid


def test_nested_content_stays_in_its_branch(sym, tags):
    ids = sym("<guideline> <plan> x </plan> </guideline> <step> h <guideline> <plan> y </plan> </guideline> "
              "</step> <takeaway> t </takeaway>")
    layout = build_layout(ids, tags, 0)
    assert layout.branch_id.tolist() == [0] * 5 + [1] * 8 + [0] * 3


def test_bad_arguments_raise_clear_errors(sym, tags):
    with pytest.raises(ValueError, match="response_start"):
        build_layout(sym("a b"), tags, 5)
    with pytest.raises(TypeError, match="TagIds"):
        build_layout(sym("a b"), {"x": 1}, 0)
    with pytest.raises(TypeError, match="token_ids"):
        build_layout(torch.zeros(2, 2, dtype=torch.long), tags, 0)


def test_pack_layouts_concatenates_with_seq_ids(sym, tags):
    a = build_layout(sym(TWO_BRANCHES), tags, 3)
    b = build_layout(sym(THREE_AND_TWO), tags, 1)
    packed = pack_layouts([a, b])
    assert len(packed) == len(a) + len(b)
    assert packed.seq_id.tolist() == [0] * len(a) + [1] * len(b)
    assert packed.position_ids.tolist() == a.position_ids.tolist() + b.position_ids.tolist()
    assert packed.cu_seqlens.tolist() == [0, len(a), len(a) + len(b)]
    mask = dense_mask(packed)
    assert not mask[len(a):, :len(a)].any()  # no attention across sequences
    assert torch.equal(mask[:len(a), :len(a)], dense_mask(a))
    assert torch.equal(mask[len(a):, len(a):], dense_mask(b))


_TAG_WORDS = list(TAGS.values())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TAG_WORDS + ["w", "x"]), max_size=60), st.integers(1, 6), st.data())
def test_build_layout_is_total(sym, tags, words, max_branches, data):
    ids = sym(" ".join(words)) if words else []
    start = data.draw(st.integers(0, len(ids)))
    layout = build_layout(ids, tags, start, max_branches=max_branches)
    n = len(ids)
    assert layout.position_ids.shape == layout.branch_id.shape == layout.block_id.shape == (n,)
    assert (layout.position_ids >= 0).all()
    assert layout.is_valid == (layout.error is None)
    # shared tokens never go backwards; every branch of a block starts at the same position
    pos, br, blk = layout.position_ids.tolist(), layout.branch_id.tolist(), layout.block_id.tolist()
    shared = [p for p, b in zip(pos, br) if b == 0]
    assert shared == sorted(shared)
    starts = {}
    for i in range(n):
        if br[i] and (i == 0 or br[i - 1] != br[i] or blk[i - 1] != blk[i]):
            starts.setdefault(blk[i], set()).add(pos[i])
    assert all(len(s) == 1 for s in starts.values())
