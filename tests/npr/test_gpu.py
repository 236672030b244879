"""CUDA checks (skipped without a GPU): the decoder's dtype-scaled consistency with the structured forward
(flex BlockMask on CUDA), and compiled flex attention with the BlockMask against SDPA with the dense mask."""

import pytest
import torch

from npr import structured_logprobs
from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
from npr.layout import build_layout
from npr.masks import block_mask, dense_mask
from npr.tiny import make_tiny_model
from tests.cases import prompt_ids

pytestmark = pytest.mark.gpu
TOL = {torch.float32: 2e-4, torch.bfloat16: 0.15}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_decoder_consistency(tokenizer, dtype):
    model = make_tiny_model(tokenizer, seed=0, dtype=dtype).cuda()
    script = ScriptedStructure([[5, 3, 7], [6, 2], [4, 4, 4, 1]])  # last branches finish first too
    prompts = [prompt_ids(tokenizer), prompt_ids(tokenizer, "Add 2 and 3.")]
    decoder = Decoder(model, tokenizer, DecodingConfig(max_new_tokens=200))
    results = decoder.generate(prompts, SamplingParams(temperature=0.0), script=script)
    for result in results:
        assert result.layout.is_valid
        with torch.no_grad():
            want = structured_logprobs(model, result.layout).double().cpu()
        got = torch.tensor(result.logprobs, dtype=torch.float64)
        assert (got - want).abs().max().item() < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_flex_block_mask_matches_dense_sdpa(sym, tags, dtype):
    from torch.nn.attention.flex_attention import flex_attention
    import torch.nn.functional as F

    from tests.cases import THREE_AND_TWO

    ids = sym(THREE_AND_TWO) * 9  # ~400 tokens: several 128-blocks, a ragged last one
    layout = build_layout(ids, tags, 1)
    n = len(layout)
    q, k, v = (torch.randn(1, 4, n, 64, device="cuda", dtype=dtype) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(layout, device="cuda")[None, None])
    got = torch.compile(flex_attention)(q, k, v, block_mask=block_mask(layout, device="cuda"))
    torch.testing.assert_close(got, want, atol=2e-2 if dtype == torch.bfloat16 else 2e-5, rtol=0)
