"""dense_mask == BlockMask rendered dense (single, packed, batched; lengths not divisible by the
block size), and flex attention with the BlockMask == SDPA with the dense mask."""

import pytest
import torch

from npr.layout import build_layout, pack_layouts
from npr.masks import block_mask, dense_mask, make_npr_mask_mod, render_block_mask
from tests.cases import THREE_AND_TWO, TWO_BRANCHES


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


# --- attention kwargs: the structure as per-token ids, rendered by the attention "npr" itself ---------

from npr.attention import register_attention  # noqa: E402
from npr.masks import (  # noqa: E402
    STRUCTURE_KEYS, attention_kwargs, block_mask_from_ids, dense_mask_from_ids, ids_from_kwargs)


def test_per_sample_kwargs_concatenate_to_the_packed_ones(layouts):
    packed = attention_kwargs(layouts)
    pieces = [attention_kwargs(x) for x in layouts]
    for key in STRUCTURE_KEYS:
        assert torch.equal(torch.cat([p[key] for p in pieces]), packed[key]), key
    assert torch.equal(packed["position_ids"][0], torch.cat([x.position_ids for x in layouts]))
    assert "attention_mask" not in packed


def test_ids_from_kwargs_packed_row_and_padded_rows_render_the_dense_rule(layouts):
    kw = attention_kwargs(layouts)
    args = (kw["npr_block_id"], kw["npr_branch_id"], kw["npr_seq_lens"])
    total, longest = sum(len(x) for x in layouts), max(len(x) for x in layouts)
    packed = dense_mask_from_ids(*ids_from_kwargs(*args, num_rows=1, length=total + 5))[0]
    assert torch.equal(packed[:total, :total], dense_mask(pack_layouts(layouts)))
    assert packed[total:, total:].equal(torch.eye(5, dtype=torch.bool))  # trailing padding sees itself only
    padded = dense_mask_from_ids(*ids_from_kwargs(*args, num_rows=2, length=longest))
    for row, x in enumerate(layouts):
        assert torch.equal(padded[row, :len(x), :len(x)], dense_mask(x))
        assert not padded[row, :len(x), len(x):].any()


def test_ids_from_kwargs_rejects_kwargs_that_do_not_fit(layouts):
    kw = attention_kwargs(layouts)
    args = (kw["npr_block_id"], kw["npr_branch_id"], kw["npr_seq_lens"])
    with pytest.raises(ValueError, match="do not fit"):
        ids_from_kwargs(*args, num_rows=3, length=100)
    with pytest.raises(ValueError, match="do not fit"):
        ids_from_kwargs(*args, num_rows=1, length=10)
    with pytest.raises(ValueError, match="sums to"):
        ids_from_kwargs(kw["npr_block_id"][:-1], kw["npr_branch_id"][:-1], kw["npr_seq_lens"], 1, 100)
    with pytest.raises(TypeError, match="Layout"):
        attention_kwargs([torch.zeros(3)])


@pytest.mark.parametrize("block_size", [4, 8, 16])
@pytest.mark.parametrize("rows", ["packed", "padded"])
def test_tile_built_block_mask_equals_dense(layouts, block_size, rows):
    kw = attention_kwargs(layouts * 2)
    args = (kw["npr_block_id"], kw["npr_branch_id"], kw["npr_seq_lens"])
    if rows == "packed":
        ids = ids_from_kwargs(*args, num_rows=1, length=sum(len(x) for x in layouts) * 2 + 3)
    else:
        ids = ids_from_kwargs(*args, num_rows=4, length=max(len(x) for x in layouts))
    bm = block_mask_from_ids(*ids, block_size=block_size)
    assert torch.equal(render_block_mask(bm)[:, 0], dense_mask_from_ids(*ids))
    assert bm.sparsity() > 30.0  # tiles above the diagonal and across sequences are skipped
    if block_size == 4:  # small tiles fit inside shared runs: some are provably all-visible
        assert bm.full_kv_num_blocks.sum() > 0


def test_tile_built_block_mask_skips_sibling_tiles(tags):
    # two long branches: with tiles of 4, branch 2's queries never touch branch 1's tiles
    ids = [1, 2, 3, tags.guideline_open, tags.plan_open, 5, tags.plan_close, tags.plan_open, 6, tags.plan_close,
           tags.guideline_close] + [tags.step_open] + [7] * 14 + [tags.step_close] + [tags.step_open] + [8] * 14 \
        + [tags.step_close, tags.takeaway_open, 9, tags.takeaway_close]
    layout = build_layout(ids, tags, 3)
    assert layout.is_valid, layout.error
    block, branch = layout.block_id[None], layout.branch_id[None]
    seq = torch.zeros_like(block)
    bm = block_mask_from_ids(block, branch, seq, block_size=4)
    dense = bm.to_dense()[0, 0]  # [nQ, nKV] tiles that are computed at all
    (b1, e1), (b2, e2) = layout.branch_spans()[0]
    q_tile, kv_tile = (b2 + 8) // 4, (b1 + 8) // 4  # tiles inside branch 2 and branch 1
    assert not dense[q_tile, kv_tile]
    assert torch.equal(render_block_mask(bm)[0, 0], dense_mask(layout))


def _three_sequences(sym, tags):
    """Two forked layouts and a plain one, of different lengths (packing and padding both matter)."""
    return [build_layout(sym(TWO_BRANCHES), tags, 3), build_layout(sym(THREE_AND_TWO), tags, 1),
            build_layout(sym("P P a b c"), tags, 2)]


def _structured_logits(model, seqs, mode: str) -> list[torch.Tensor]:
    """Per-sequence logits of one forward with attention "npr" reading the structure kwargs: one packed row,
    or a right-padded batch that also carries a 2-D padding mask (verl's padded path; it must not matter)."""
    kw = attention_kwargs(seqs)
    structure = {key: kw[key] for key in STRUCTURE_KEYS}
    previous = model.config._attn_implementation
    model.config._attn_implementation = "npr"
    try:
        if mode == "packed":
            logits = model(input_ids=torch.cat([x.token_ids for x in seqs])[None], position_ids=kw["position_ids"],
                           attention_mask=None, **structure).logits[0]
            return list(torch.split(logits, [len(x) for x in seqs]))
        longest = max(len(x) for x in seqs)
        pad = lambda t: torch.nn.functional.pad(t, (0, longest - len(t)))  # noqa: E731
        mask2d = torch.stack([pad(torch.ones(len(x), dtype=torch.long)) for x in seqs])
        logits = model(input_ids=torch.stack([pad(x.token_ids) for x in seqs]),
                       position_ids=torch.stack([pad(x.position_ids) for x in seqs]), attention_mask=mask2d,
                       **structure).logits
        return [logits[i, :len(x)] for i, x in enumerate(seqs)]
    finally:
        model.config._attn_implementation = previous


def _tiny_logprobs(model, **inputs):
    with torch.no_grad():
        return torch.log_softmax(model(**inputs).logits.double(), -1)


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_attention_reads_kwargs_and_ignores_transformers_masks(model64, sym, tags, mode):
    """The attention "npr" with attention_kwargs equals, per sequence, a forward with the explicit dense
    mask; a 2-D padding mask passed alongside (verl's padded path) must not change anything."""
    register_attention()
    seqs = _three_sequences(sym, tags)
    want = [_tiny_logprobs(model64, input_ids=x.token_ids[None], position_ids=x.position_ids[None],
                           attention_mask=dense_mask(x)[None, None])[0] for x in seqs]
    with torch.no_grad():
        got = [torch.log_softmax(x.double(), -1) for x in _structured_logits(model64, seqs, mode)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["packed", "padded"])
def test_attention_gradients_equal_per_sequence_gradients(model64, sym, tags, mode):
    """Training goes through the same path: the parameter gradients of a packed row or a padded batch
    (structure kwargs, segments concatenated on CPU) equal those of each sequence under its explicit mask."""
    register_attention()
    seqs = _three_sequences(sym, tags)
    params = [p for p in model64.parameters() if p.requires_grad]

    def grads(loss):
        return [g.clone() for g in torch.autograd.grad(loss, params, allow_unused=True)]

    def total(logits, x):
        return torch.log_softmax(logits, -1)[torch.arange(len(x) - 1), x.token_ids[1:]].sum()

    want = None
    for x in seqs:
        logits = model64(input_ids=x.token_ids[None], position_ids=x.position_ids[None],
                         attention_mask=dense_mask(x)[None, None]).logits[0, :-1]
        g = grads(total(logits, x))
        want = g if want is None else [a + b for a, b in zip(want, g)]
    pieces = _structured_logits(model64, seqs, mode)
    got = grads(sum(total(p[:-1], x) for p, x in zip(pieces, seqs)))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9)


def test_attention_rejects_kwargs_plus_explicit_mask(model64, sym, tags):
    register_attention()
    x = build_layout(sym(TWO_BRANCHES), tags, 3)
    kw = attention_kwargs(x)
    previous = model64.config._attn_implementation
    model64.config._attn_implementation = "npr"
    try:
        with pytest.raises(ValueError, match="pass one of them"):
            model64(x.token_ids[None], position_ids=kw["position_ids"], attention_mask=dense_mask(x)[None, None],
                    **{key: kw[key] for key in STRUCTURE_KEYS})
    finally:
        model64.config._attn_implementation = previous


def test_flex_with_tile_built_block_mask_matches_dense_sdpa(layouts):
    from torch.nn.attention.flex_attention import flex_attention
    import torch.nn.functional as F

    kw = attention_kwargs(layouts)
    ids = ids_from_kwargs(kw["npr_block_id"], kw["npr_branch_id"], kw["npr_seq_lens"], 1,
                          sum(len(x) for x in layouts))
    length = ids[0].shape[1]
    q, k, v = (torch.randn(1, 2, length, 8, dtype=torch.float64) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask_from_ids(*ids)[:, None])
    got = flex_attention(q, k, v, block_mask=block_mask_from_ids(*ids, block_size=16))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
def test_attention_on_cuda_renders_a_block_mask_and_matches_cpu(layouts):
    from torch.nn.attention.flex_attention import BlockMask

    from npr.attention import _structure_mask, npr_attention_forward

    kw = attention_kwargs(layouts)
    structure = {key: kw[key] for key in STRUCTURE_KEYS}
    length = sum(len(x) for x in layouts)
    assert isinstance(_structure_mask(dict(structure), 1, length, length, torch.device("cuda")), BlockMask)
    module = torch.nn.Module().eval()
    q = torch.randn(1, 4, length, 16)
    k, v = torch.randn(1, 2, length, 16), torch.randn(1, 2, length, 16)
    want, _ = npr_attention_forward(module, q, k, v, None, **structure)
    got, _ = npr_attention_forward(module, q.cuda(), k.cuda(), v.cuda(), None,
                                   **{key: t.clone() for key, t in structure.items()})
    torch.testing.assert_close(got.cpu(), want, rtol=2e-5, atol=2e-5)


def test_structure_is_rendered_once_per_set_of_kwargs_tensors(layouts):
    from npr.attention import DenseSegments, _structure_mask

    kw = attention_kwargs(layouts)
    structure = {key: kw[key] for key in STRUCTURE_KEYS}
    length = sum(len(x) for x in layouts)
    first = _structure_mask(structure, 1, length, length, torch.device("cpu"))
    assert isinstance(first, DenseSegments) and len(first) == len(layouts)
    assert _structure_mask(structure, 1, length, length, torch.device("cpu")) is first  # every layer: no re-render
    fresh = dict(structure, npr_seq_lens=structure["npr_seq_lens"].clone())
    assert _structure_mask(fresh, 1, length, length, torch.device("cpu")) is not first
    for (row, start, end, mask), x in zip(first, layouts):
        assert row == 0 and end - start == len(x) and torch.equal(mask, dense_mask(x))


def test_without_kwargs_a_packed_row_splits_where_positions_restart(model64, sym, tags):
    """Unstructured samples packed by verl (no attention kwargs, no mask): causal per sequence, split where
    position_ids restart at 0, as a forward of each sequence alone."""
    register_attention()
    seqs = [torch.tensor(sym(text)) for text in ("a b c d e", "f g", "h i j")]
    want = [_tiny_logprobs(model64, input_ids=s[None])[0] for s in seqs]
    previous = model64.config._attn_implementation
    model64.config._attn_implementation = "npr"
    try:
        got = _tiny_logprobs(model64, input_ids=torch.cat(seqs)[None],
                             position_ids=torch.cat([torch.arange(len(s)) for s in seqs])[None])[0]
    finally:
        model64.config._attn_implementation = previous
    for g, w in zip(torch.split(got, [len(s) for s in seqs]), want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9)
