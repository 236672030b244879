"""The NPR rows' token choice and scoring (`sglang_npr.engine.sampling.choose_and_score`) against the
plain composition it shortcuts: per row the script's constraint applied to the raw logits, then the
reference sampler (`npr.decoding.sampler.sample_batch`) over all rows, forced rows overridden, log-probs
of the raw logits. The fast paths (every row forced, every row greedy, every row sampling) must give
the same tokens and log-probs as the general path."""

from __future__ import annotations

import pytest
import torch

from npr.decoding.sampler import sample_batch
from npr.decoding.scripted import CONTENT
from npr.forkjoin import Seq
from npr.scoring import log_probs
from sglang_npr.engine.sampling import Choice, choose_and_score

V = 64


class Script:
    """A script whose constraint per row is given: a token id, or CONTENT (ids >= 8 only)."""

    def __init__(self, wanted: dict[int, int]):
        self.wanted = wanted

    def constraint(self, seq: Seq) -> int:
        return self.wanted[id(seq)]

    @staticmethod
    def not_content(vocab_size: int, device) -> torch.Tensor:
        banned = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        banned[:8] = True
        return banned


def expected(logits, rows, seqs, choices, score_rows, score_tokens):
    raw = logits[rows]
    out, forced = [], []
    for row, seq, choice in zip(raw, seqs, choices):
        want = choice.script.constraint(seq) if choice.script is not None else None
        if want == CONTENT:
            row = row.masked_fill(Script.not_content(V, row.device), float("-inf"))
        out.append(row)
        forced.append(want if want is not None and want >= 0 else -1)
    tokens = sample_batch(torch.stack(out), torch.tensor([c.temperature for c in choices], dtype=torch.float64),
                          torch.tensor([c.top_p for c in choices], dtype=torch.float64),
                          torch.tensor([c.top_k for c in choices]),
                          torch.tensor([c.key(s) for s, c in zip(seqs, choices)]),
                          torch.tensor([len(s.tokens) for s in seqs]))
    forced = torch.tensor(forced)
    tokens = torch.where(forced >= 0, forced, tokens)
    lp = log_probs(logits)
    return (tokens.tolist(), lp[rows].gather(1, tokens[:, None]).squeeze(1).tolist(),
            lp[score_rows, score_tokens].tolist() if score_rows else [])


CASES = {  # per row: (temperature, constraint or None)
    "all greedy, unscripted": [(0.0, None)] * 5,
    "all sampled, unscripted": [(0.9, None)] * 5,
    "all forced": [(0.9, 3), (0.0, 5), (0.7, 1), (0.0, 2), (1.0, 4)],
    "all content, greedy": [(0.0, CONTENT)] * 5,
    "all content, sampled": [(1.0, CONTENT)] * 5,
    "mixed": [(0.0, None), (0.8, CONTENT), (0.0, 4), (1.0, None), (0.0, CONTENT)],
}


@pytest.mark.parametrize("subset", ["every row", "some rows"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_paths_equal_the_general_composition(case, subset):
    torch.manual_seed(0)
    spec = CASES[case]
    logits = torch.randn(7, V) * 3
    logits[:, :8] += 6.0  # the tokens a content slot may not take lead the raw logits
    rows = list(range(len(spec))) if subset == "every row" else [6, 1, 3, 0, 4]
    if subset == "every row":
        logits = logits[:len(spec)]
    seqs = [Seq(None, branch=i % 3, block=i % 2, cursor=0) for i in range(len(spec))]
    for i, seq in enumerate(seqs):
        seq.tokens.extend(range(i + 2))
    wanted = {id(s): c for s, (_, c) in zip(seqs, spec) if c is not None}
    script = Script(wanted)
    choices = [Choice(t, 0.9 if t > 0 else 1.0, 0, 1234 + i, script if c is not None else None)
               for i, (t, c) in enumerate(spec)]
    score_rows, score_tokens = [rows[0], rows[2]], [9, 11]
    got = choose_and_score(logits, rows, seqs, choices, score_rows, score_tokens).host()
    want = expected(logits, rows, seqs, choices, score_rows, score_tokens)
    assert got[0] == want[0]
    assert got[1] == pytest.approx(want[1], abs=1e-6)
    assert got[2] == pytest.approx(want[2], abs=1e-6)
    assert all(t >= 8 for t, (_, c) in zip(got[0], spec) if c == CONTENT)


def test_a_score_only_step_and_an_empty_step():
    logits = torch.randn(3, V)
    tokens, logprobs, scores = choose_and_score(logits, [], [], [], [2, 0], [5, 6]).host()
    assert tokens == [] and logprobs == []
    assert scores == pytest.approx(log_probs(logits)[[2, 0], [5, 6]].tolist())
    assert choose_and_score(logits, [], [], [], [], []).host() == ([], [], [])
