"""dense_mask == BlockMask rendered dense (single, packed, batched; lengths not divisible by the
block size), and flex attention with the BlockMask == SDPA with the dense mask."""

import pytest
import torch

from npr.layout import build_layout, pack_layouts
from npr.masks import block_mask, dense_mask, make_npr_mask_mod, render_block_mask
from tests.npr.test_layout import THREE_AND_TWO, TWO_BRANCHES


@pytest.fixture
def layouts(sym, tags):
    return [build_layout(sym(TWO_BRANCHES), tags, 3), build_layout(sym(THREE_AND_TWO), tags, 1)]


@pytest.mark.parametrize("block_size", [16, 128])
def test_block_mask_equals_dense_single(layouts, block_size):
    for layout in layouts:
        assert len(layout) % 16  # 25 and 46: not multiples of the block size
        bm = block_mask(layout, block_size=block_size, device="cpu")
        rendered = render_block_mask(bm)
        assert torch.equal(rendered[0, 0], dense_mask(layout))


def test_block_mask_equals_dense_packed(layouts):
    packed = pack_layouts(layouts * 2)
    bm = block_mask(packed, block_size=16, device="cpu")
    assert torch.equal(render_block_mask(bm)[0, 0], dense_mask(packed))
    # the block mask skips whole blocks across sequences: it is sparser than all-causal
    assert bm.sparsity() > 50.0


def test_block_mask_equals_dense_batched_with_padding(layouts):
    length = max(len(x) for x in layouts)
    block = torch.zeros(2, length, dtype=torch.long)
    branch = torch.zeros(2, length, dtype=torch.long)
    seq = torch.full((2, length), -1, dtype=torch.long)
    for b, x in enumerate(layouts):
        block[b, :len(x)], branch[b, :len(x)], seq[b, :len(x)] = x.block_id, x.branch_id, 0

    class Ids:
        block_id, branch_id, seq_id = block, branch, seq

    dense = dense_mask(Ids)
    assert dense.shape == (2, length, length)
    for b, x in enumerate(layouts):
        assert torch.equal(dense[b, :len(x), :len(x)], dense_mask(x))
        pad = torch.arange(len(x), length)
        assert dense[b, pad, pad].all() and dense[b].sum(-1).min() >= 1  # no empty softmax row
    rendered = render_block_mask(block_mask(Ids, block_size=16, device="cpu"))
    assert torch.equal(rendered[:, 0], dense)


def test_flex_attention_matches_sdpa_with_dense_mask(layouts):
    from torch.nn.attention.flex_attention import flex_attention
    import torch.nn.functional as F

    packed = pack_layouts(layouts)
    length = len(packed)
    q, k, v = (torch.randn(1, 2, length, 8, dtype=torch.float64) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(packed)[None, None])
    got = flex_attention(q, k, v, block_mask=block_mask(packed, block_size=16, device="cpu"))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_mask_mod_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share shape"):
        make_npr_mask_mod(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
