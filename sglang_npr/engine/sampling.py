"""Token choice and scoring of NPR rows on the model's device, in one batch per step: the raw logits
of the NPR rows (split off before SGLang's sampler) give the requested scores (log-softmax at given
tokens) and, for the rows that sample, a token from `npr.decoding.sampler.sample_batch` (the reference
decoder's sampler: same seeds, same counters, same token) after the request's script, if any. The
results leave the device in ONE packed copy per step (`Pending.host` waits for it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from npr.decoding.scripted import CONTENT
from npr.forkjoin import Seq, derive_seed


@dataclass(frozen=True)
class Choice:
    """How one request chooses its tokens (from its SGLang sampling params)."""

    temperature: float  # 0 = greedy
    top_p: float
    top_k: int  # 0 = off
    seed: int
    script: Any = None  # a bound npr.decoding.ScriptProcessor, or None

    def key(self, seq: Seq) -> int:
        return derive_seed(self.seed, 0, seq.block, seq.branch)


def choice_of(sampling_params, vocab_size: int, rid: Any, server_seed: int, script=None) -> Choice:
    """SGLang turns temperature 0 into top_k 1; an unseeded request's seed comes from its rid and the
    server's random_seed, never from process state, so every tensor-parallel rank draws the same."""
    sp = sampling_params
    greedy = sp.top_k == 1
    top_k = 0 if greedy or sp.top_k < 0 or sp.top_k >= vocab_size else int(sp.top_k)
    if sp.sampling_seed is not None:
        seed = int(sp.sampling_seed)
    else:
        digest = hashlib.blake2b(f"{server_seed}:{rid}".encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1
    return Choice(0.0 if greedy else float(sp.temperature), 1.0 if greedy else float(sp.top_p), top_k, seed, script)


@dataclass
class Pending:
    """A step's results on their way to the host: `sampled` tokens and log-probs, then `scores`."""

    packed: Any  # float64 tensor [2 * num_sampled + num_scores], on the host once `event` completes
    num_sampled: int
    event: Any = None
    _host: list | None = None

    def host(self) -> tuple[list[int], list[float], list[float]]:
        if self._host is None:
            if self.event is not None:
                self.event.synchronize()
            self._host = self.packed.tolist()
        values, k = self._host, self.num_sampled
        return [int(t) for t in values[:k]], values[k:2 * k], values[2 * k:]


def choose_and_score(logits, sample_rows: Sequence[int], sample_seqs: Sequence[Seq], choices: Sequence[Choice],
                     score_rows: Sequence[int], score_tokens: Sequence[int]) -> Pending:
    """logits: [R, V] raw. Rows `sample_rows` choose a token (seq and choice per row); (score_rows[i],
    score_tokens[i]) are scored. No host sync here: the packed result is copied asynchronously.

    Host work is kept per step, not per row where it can be: rows the script forces skip the sampler,
    an all-greedy step takes the argmax without building the sampler's per-row tensors, and when every
    row samples (a plain decode step) no row index is uploaded."""
    import torch

    from npr.decoding.sampler import sample_batch
    from npr.scoring import log_probs

    device = logits.device
    logprobs = log_probs(logits)
    k = len(sample_rows)
    pieces = []
    if k:
        every = list(sample_rows) == list(range(logits.shape[0]))
        index = None if every else torch.tensor(sample_rows, dtype=torch.int64).to(device, non_blocking=True)
        raw = logits if every else logits.index_select(0, index)
        picked_logprobs = logprobs if every else logprobs.index_select(0, index)
        constraints = [c.script.constraint(s) if c.script is not None else None for s, c in zip(sample_seqs, choices)]
        forced = [c if c is not None and c >= 0 else -1 for c in constraints]
        if all(f >= 0 for f in forced):  # every row's token is the script's: no sampler at all
            tokens = torch.tensor(forced, dtype=torch.int64).to(device, non_blocking=True)
        else:
            processed = raw
            content = [i for i, c in enumerate(constraints) if c == CONTENT]
            if content:
                script = choices[content[0]].script
                banned = script.not_content(raw.shape[-1], device)
                if len(content) == k:
                    processed = raw.masked_fill(banned.unsqueeze(0), float("-inf"))
                else:
                    rows = torch.zeros(k, dtype=torch.bool)
                    rows[content] = True
                    processed = raw.masked_fill(rows.to(device).unsqueeze(-1) & banned.unsqueeze(0), float("-inf"))
            if all(c.temperature <= 0 for c in choices):  # greedy: sample_batch's own first answer
                tokens = torch.argmax(processed, -1)
            else:
                temperature = torch.tensor([c.temperature for c in choices], dtype=torch.float64)
                top_p = torch.tensor([c.top_p for c in choices], dtype=torch.float64)
                top_k = torch.tensor([c.top_k for c in choices], dtype=torch.int64)
                keys = torch.tensor([c.key(s) for s, c in zip(sample_seqs, choices)], dtype=torch.int64)
                counters = torch.tensor([len(s.tokens) for s in sample_seqs], dtype=torch.int64)
                tokens = sample_batch(processed, temperature, top_p, top_k, keys, counters)
            if any(f >= 0 for f in forced):
                forced_t = torch.tensor(forced, dtype=torch.int64).to(device, non_blocking=True)
                tokens = torch.where(forced_t >= 0, forced_t, tokens)
        pieces += [tokens.double(), picked_logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).double()]
    if score_rows:
        at = torch.tensor([list(score_rows), list(score_tokens)], dtype=torch.int64).to(device, non_blocking=True)
        pieces.append(logprobs[at[0], at[1]].double())
    packed = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.float64, device=device)
    if device.type == "cpu":
        return Pending(packed, k)
    host = torch.empty(packed.shape, dtype=torch.float64, pin_memory=True)
    host.copy_(packed, non_blocking=True)
    event = torch.cuda.Event() if device.type == "cuda" else None
    if event is not None:
        event.record()
    return Pending(host, k, event)
