"""The batched, counter-based sampler both engines share (npr.decoding.sampler): its random stream is an
exact function of (key, counter), rows do not depend on their batch, and the draws follow the
temperature / top-k / top-p distribution."""

import math

import torch

from npr.decoding.sampler import sample_batch, uniforms
from npr.forkjoin import derive_seed

M32 = 0xFFFFFFFF


def mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0x735A2D97) & M32
    return x ^ (x >> 15)


def uniform_reference(key: int, counter: int) -> float:
    """The same stream in plain Python integers: what every device must reproduce bit for bit."""
    lo, hi, count = key & M32, (key >> 32) & M32, counter & M32
    h1 = mix32(lo ^ mix32(hi ^ mix32(count ^ 0x9E3779B9)))
    h2 = mix32(h1 ^ mix32((count + 0x85EBCA6B) & M32) ^ hi)
    return (h1 * 2**21 + (h2 >> 11)) / 2**53


def params(rows, temperature=1.0, top_p=1.0, top_k=0):
    return (torch.full((rows,), float(temperature)), torch.full((rows,), float(top_p)),
            torch.full((rows,), top_k, dtype=torch.long))


def test_uniforms_are_the_integer_reference_exactly():
    keys = [derive_seed(s, r, b, br) for s in range(3) for r in range(3) for b in range(2) for br in range(3)]
    keys += [0, 1, 2**62, 2**63 - 1]
    for counter in (0, 1, 7, 2**31, 2**32 + 5):
        got = uniforms(torch.tensor(keys), torch.full((len(keys),), counter)).tolist()
        assert got == [uniform_reference(k, counter) for k in keys]


def test_uniforms_look_uniform():
    draws = uniforms(torch.full((20000,), derive_seed(0, 0, 0, 0)), torch.arange(20000))
    assert 0 <= float(draws.min()) and float(draws.max()) < 1
    assert abs(float(draws.mean()) - 0.5) < 0.01
    ordered = torch.sort(draws).values
    ks = float((ordered - torch.arange(1, 20001, dtype=torch.float64) / 20000).abs().max())
    assert ks < 0.015, ks  # Kolmogorov-Smirnov distance to U(0, 1)
    other = uniforms(torch.full((20000,), derive_seed(0, 0, 0, 1)), torch.arange(20000))
    assert abs(float(torch.corrcoef(torch.stack([draws, other]))[0, 1])) < 0.03  # keys give independent streams


def test_rows_do_not_depend_on_their_batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    keys = torch.tensor([derive_seed(1, i, 0, 0) for i in range(6)])
    counters = torch.tensor([0, 3, 3, 9, 1, 2])
    temperature = torch.tensor([0.0, 1.0, 0.7, 1.3, 1.0, 0.0])
    top_p = torch.tensor([1.0, 0.9, 1.0, 0.5, 1.0, 1.0])
    top_k = torch.tensor([0, 0, 5, 0, 3, 0])
    together = sample_batch(logits, temperature, top_p, top_k, keys, counters)
    for i in range(6):
        alone = sample_batch(logits[i:i + 1], temperature[i:i + 1], top_p[i:i + 1], top_k[i:i + 1], keys[i:i + 1],
                             counters[i:i + 1])
        assert int(alone) == int(together[i])
    assert int(together[0]) == int(logits[0].argmax()) and int(together[5]) == int(logits[5].argmax())


def test_draws_follow_the_distribution():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625]))
    n = 20000
    keys = torch.full((n,), derive_seed(5, 0, 0, 0))
    counts = torch.bincount(sample_batch(logits.expand(n, -1), *params(n), keys, torch.arange(n)), minlength=5)
    expected = torch.softmax(logits, -1) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20, (counts.tolist(), chi2)  # 4 degrees of freedom: p ~ 5e-4
    hot = sample_batch(logits.expand(n, -1), *params(n, temperature=0.25), keys, torch.arange(n))
    assert float((hot == 0).double().mean()) > 0.9  # a low temperature sharpens toward the mode


def test_top_k_and_top_p_keep_only_their_tokens():
    torch.manual_seed(1)
    logits = torch.randn(1, 40).expand(4000, -1)
    keys, counters = torch.full((4000,), 11), torch.arange(4000)
    top3 = set(torch.topk(logits[0], 3).indices.tolist())
    assert set(sample_batch(logits, *params(4000, top_k=3), keys, counters).tolist()) <= top3
    probs = torch.softmax(logits[0], -1)
    order = torch.argsort(probs, descending=True)
    exclusive = probs[order].cumsum(0) - probs[order]
    nucleus = set(order[exclusive < 0.6].tolist())
    got = set(sample_batch(logits, *params(4000, top_p=0.6), keys, counters).tolist())
    assert got <= nucleus and len(got) == len(nucleus)


def test_a_tiny_positive_temperature_is_the_argmax_not_nan():
    torch.manual_seed(2)
    logits = torch.randn(5, 30) * 50
    tokens = sample_batch(logits, *params(5, temperature=1e-320), torch.arange(5), torch.zeros(5, dtype=torch.long))
    assert tokens.tolist() == logits.argmax(-1).tolist()
    assert not math.isnan(float(uniforms(torch.tensor([3]), torch.tensor([4]))))
