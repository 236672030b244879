"""The contract harness: a model-free fake engine that drives a `ForkJoinController` through
randomized structures (stray tags, EOS inside a branch, nesting, bad plan counts, tight budgets,
aborts, engine failures), and the invariants every engine adapter must keep:

* `build_layout` of each output gives the positions the controller assigned;
* total tokens <= max_total_tokens, critical path <= max_new_tokens, stats agree with the output;
* every output token is scored exactly once, with a finite log-prob, by the row of the token before
  it in the linearised response, seeing exactly what the structured mask lets it see;
* every slot is returned.

The fake "model" is a hash: the log-prob of token t at a row is a function of the (token, position)
pairs the row attends to, in order, and of t. So one check covers attribution, visibility and
positions at once. Used by tests/forkjoin and by the SGLang plugin's tests (invariants only there)."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from npr.forkjoin.controller import ForkJoinController
from npr.forkjoin.state import Finish, Prefilled, Seq, Work, WorkResult
from npr.forkjoin.limits import Limits
from npr.schema import TagIds
from npr.templates import Templates

FAKE_TAGS = TagIds(*range(1, 9))
FAKE_EOS = 0
FAKE_CONTENT = tuple(range(100, 140))


def fake_templates() -> Templates:
    """Templates whose encoder maps each character to one id (headers "\\n{i}:" are 3+ ids)."""
    return Templates(FAKE_TAGS, lambda text: [200 + ord(c) % 50 for c in text])


def fake_logprob(context: Sequence[tuple[int, int]], position: int, token: int) -> float:
    """A deterministic stand-in for log_softmax(logits)[token] of a row that attends to `context`."""
    digest = hashlib.blake2b(repr((tuple(context), position, token)).encode(), digest_size=8).digest()
    return -1.0 - int.from_bytes(digest, "little") % 1_000_000 / 1e5


@dataclass
class Chaos:
    """How often the fake policy misbehaves."""

    stray: float = 0.05  # a random tag where the script wanted content
    eos_in_branch: float = 0.02
    nested: float = 0.03  # a <guideline> inside a step


@dataclass
class FakeEngine:
    """Drives a controller with hash log-probs and a randomized scripted policy."""

    controller: ForkJoinController
    seed: int = 0
    chaos: Chaos = field(default_factory=Chaos)
    prefill: bool = False  # run each prompt itself and hand the controller a Prefilled request (SGLang's way)
    slot_tokens: dict[Any, tuple[int, int]] = field(default_factory=dict)  # slot -> (token, position)
    scripts: dict[Any, list[int]] = field(default_factory=dict)
    num_steps: int = 0

    def add(self, req_id: Any, prompt: Sequence[int], trunk_script: list[int], limits: Limits | None = None):
        self.scripts[req_id] = trunk_script
        if not self.prefill:
            return self.controller.add_request(req_id, prompt, limits)
        slots = [("prompt", req_id, i) for i in range(len(prompt))]  # the engine's, not the controller's
        for slot, token, position in zip(slots, prompt, range(len(prompt))):
            self.slot_tokens[slot] = (token, position)
        token = self._trunk_choice(req_id, 0)
        context = [(t, p) for p, t in enumerate(prompt)]
        first = Prefilled(slots, token, fake_logprob(context, len(prompt) - 1, token))
        return self.controller.add_request(req_id, prompt, limits, prefilled=first)

    def run(self, abort_at: dict[Any, int] | None = None, fail_at: int | None = None,
            max_steps: int = 100_000) -> list[Finish]:
        """Step until every request finished. abort_at: req_id -> step; fail_at: raise at that step."""
        abort_at = dict(abort_at or {})
        finishes: list[Finish] = []
        controller = self.controller
        while controller.has_work:
            if self.num_steps >= max_steps:
                raise RuntimeError(f"no progress after {max_steps} steps")
            for request in list(controller.running) + list(controller.waiting):
                if abort_at.get(request.req_id) == self.num_steps:
                    finishes += [e for e in controller.abort(request) if isinstance(e, Finish)]
            plan = controller.plan()
            finishes += [e for e in plan.events if isinstance(e, Finish)]
            if fail_at is not None and self.num_steps == fail_at:
                controller.release_all()
                raise RuntimeError(f"fake engine failure at step {fail_at}")
            results = [self._run_work(work) for work in plan.works]
            finishes += [e for e in controller.commit(plan, results) if isinstance(e, Finish)]
            self.num_steps += 1
        return finishes

    def _run_work(self, work: Work) -> WorkResult:
        for slot, token, position in zip(work.slots, work.tokens, work.positions):
            self.slot_tokens[slot] = (token, position)
        visible = [self.slot_tokens[s] for s in work.context]

        def row_context(j: int) -> list[tuple[int, int]]:
            return visible + [self.slot_tokens[s] for s in work.slots[:j + 1]]

        scores = [fake_logprob(row_context(j), work.positions[j], token) for j, token in work.scores]
        if not work.sample:
            return WorkResult(scores=scores)
        last = len(work.tokens) - 1
        token = self._choose(work.seq)
        return WorkResult(scores=scores, token=token,
                          logprob=fake_logprob(row_context(last), work.positions[last], token))

    def _trunk_choice(self, req_id: Any, index: int) -> int:
        rng = random.Random(f"{self.seed}:{req_id}:0:0:{index}")
        script = self.scripts[req_id]
        wanted = script[index] if index < len(script) else FAKE_EOS
        if wanted in FAKE_CONTENT and rng.random() < self.chaos.stray:
            return rng.choice(sorted(FAKE_TAGS.all))
        return wanted

    def _choose(self, seq: Seq) -> int:
        tags = FAKE_TAGS
        if seq.is_trunk:
            return self._trunk_choice(seq.request.req_id, len(seq.tokens))
        rng = random.Random(f"{self.seed}:{seq.request.req_id}:{seq.block}:{seq.branch}:{len(seq.tokens)}")
        written = len(seq.tokens) - seq.header_len
        length = random.Random(f"{self.seed}:{seq.request.req_id}:{seq.block}:{seq.branch}").randint(0, 12)
        roll = rng.random()
        if roll < self.chaos.eos_in_branch:
            return FAKE_EOS
        if roll < self.chaos.eos_in_branch + self.chaos.stray:
            return rng.choice([tags.step_open, tags.takeaway_open, tags.plan_close, tags.guideline_close])
        if roll < self.chaos.eos_in_branch + self.chaos.stray + self.chaos.nested:
            return tags.guideline_open
        return rng.choice(FAKE_CONTENT) if written < length else tags.step_close


def random_trunk_script(rng: random.Random, max_branches: int) -> list[int]:
    """A trunk script: content, then 0-3 blocks (plan counts 0..max_branches+1), then an answer and EOS."""
    t = FAKE_TAGS
    content = lambda n: [rng.choice(FAKE_CONTENT) for _ in range(n)]  # noqa: E731
    out = content(rng.randint(0, 4))
    for _ in range(rng.randint(0, 3)):
        out += [t.guideline_open]
        for _ in range(rng.choice([0, 1, 2, 3, max_branches, max_branches + 1])):
            out += [t.plan_open] + content(rng.randint(0, 3)) + [t.plan_close]
        out += [t.guideline_close, t.takeaway_open] + content(rng.randint(0, 3)) + [t.takeaway_close]
        out += content(rng.randint(0, 2))
    return out + content(rng.randint(0, 3)) + [FAKE_EOS]


def random_limits(rng: random.Random) -> Limits:
    return Limits(max_branches=rng.choice([1, 2, 3, 5]), max_new_tokens=rng.choice([5, 20, 60, 200]),
                  max_total_tokens=rng.choice([None, 10, 40, 120]), min_fork_budget=rng.choice([0, 4, 8]))


# How an engine drives the controller: (feed_limit, prefill, limits per request). The reference decoder
# feeds whole runs; SGLang prefills each prompt itself, feeds one token per sequence per step and mixes
# the requests' own limits under one controller.
FEEDING_MODES = {"whole-runs": (None, False, False), "sglang": (1, True, True), "one-per-step": (1, False, False),
                 "prefilled": (None, True, True)}


def make_random_run(trial: int, mode: str = "whole-runs", rid=lambda r: r):
    """A randomized run: (controller limits, controller, fake engine, request count, abort steps).
    `rid(r)`: the id of request r (SGLang's are strings)."""
    from npr.forkjoin.slots import SlotManager

    feed_limit, prefill, per_request = FEEDING_MODES[mode]
    rng = random.Random(trial)
    limits = random_limits(rng)
    controller = ForkJoinController(limits, fake_templates(), [FAKE_EOS], SlotManager(rng.choice([None, 60, 200])),
                                    max_running=rng.choice([None, 2]), feed_limit=feed_limit)
    engine = FakeEngine(controller, seed=trial, prefill=prefill)
    count = rng.randint(1, 6)
    for r in range(count):
        own = random_limits(rng) if per_request and rng.random() < 0.5 else None
        engine.add(rid(r), [rng.choice(FAKE_CONTENT) for _ in range(rng.randint(1, 8))],
                   random_trunk_script(rng, (own or limits).max_branches), limits=own)
    aborts = {rid(r): rng.randint(0, 40) for r in range(count) if rng.random() < 0.3}
    return limits, controller, engine, count, aborts


def check_finish(finish: Finish, limits: Limits, templates: Templates) -> None:
    """The per-request invariants; raises AssertionError naming the broken one."""
    from npr.layout import build_layout  # the check needs tensors; the protocol does not

    traj = finish.trajectory
    prompt, tokens = traj.prompt_ids, traj.token_ids
    assert len(traj.logprobs) == len(tokens) == len(finish.positions), "one log-prob and position per token"
    assert all(math.isfinite(x) for x in traj.logprobs), f"non-finite log-prob in {traj.logprobs}"
    assert len(tokens) <= limits.total_budget, f"{len(tokens)} tokens > total budget {limits.total_budget}"
    layout = build_layout(prompt + tokens, templates.tags, len(prompt), max_branches=limits.max_branches,
                          refused_forks=traj.refused_forks)
    positions = layout.position_ids.tolist()
    assert positions[len(prompt):] == list(finish.positions), \
        f"layout positions {positions[len(prompt):]} != assigned {list(finish.positions)}"
    critical = max(positions[len(prompt):], default=len(prompt) - 1) - len(prompt) + 1
    assert critical <= limits.max_new_tokens, f"critical path {critical} > max_new_tokens {limits.max_new_tokens}"
    assert traj.stats["total_tokens"] == len(tokens) and traj.stats["critical_path_tokens"] == critical, traj.stats
    assert layout.num_forks >= traj.stats["num_forks"], (layout.num_forks, traj.stats)


def check_fake_logprobs(finish: Finish, limits: Limits, templates: Templates) -> None:
    """Every output token's log-prob is the fake model's at the row of the token before it in the
    linearised response, under the structured mask (what `structured_logprobs` is for a real model)."""
    from npr.layout import build_layout

    traj = finish.trajectory
    ids = traj.prompt_ids + traj.token_ids
    start = len(traj.prompt_ids)
    layout = build_layout(ids, templates.tags, start, max_branches=limits.max_branches,
                          refused_forks=traj.refused_forks)
    pos, blk, br = layout.position_ids.tolist(), layout.block_id.tolist(), layout.branch_id.tolist()
    for i in range(start, len(ids)):
        q = i - 1
        context = [(ids[k], pos[k]) for k in range(q + 1)
                   if not (blk[k] == blk[q] and br[k] and br[q] and br[k] != br[q])]
        expected = fake_logprob(context, pos[q], ids[i])
        got = traj.logprobs[i - start]
        assert got == expected, f"token {i - start} ({ids[i]}) scored {got}, the structured row gives {expected}"
