"""The fork-join controller: the whole step protocol of DESIGN §5, for any engine (pure Python).

Per request: SEQUENTIAL -> (</guideline>) validate plans -> FORK -> BRANCHING -> JOIN -> SEQUENTIAL.
The engine loop is

    plan = controller.plan()                 # admission, budgets, slots; one Work per live sequence
    ... one forward over every plan.works[i].tokens (written to .slots, attending .context + own) ...
    events = controller.commit(plan, [WorkResult(scores=[...], token=..., logprob=...), ...])

A `Work` says what to feed (tokens, positions, the slots their K/V go to, the slots they attend),
which rows score which token (`scores`: the log-softmax of the raw logits of row j at token t), and
whether to sample one token from the last row afterwards (`sample`: its budget is already reserved, so
no limit can be exceeded). The engine computes and reports; it never decides structure, budgets or
attribution. Log-prob convention (the trainer's): every response token is scored by the logits of the
token before it in the linearised response, so branch i's forced <step> is scored after branch i-1's
last token and the join's <takeaway> after the last branch's.

Engine options: `feed_limit` caps the tokens a sequence feeds per step (1: every step is one decode row
per sequence, forced headers included); a request `Prefilled` by the engine (its prompt run by the
engine's own prefill) starts from its first response token. Each request carries its own `Limits`;
admission and preemption are one decision over all requests.

Invariants (checked by the contract harness, tests/forkjoin): build_layout of a finished request gives
the positions assigned here; total tokens <= max_total_tokens; critical path <= max_new_tokens; every
output token scored exactly once; every slot returned."""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Sequence

from npr.forkjoin.limits import Limits, check_int
from npr.forkjoin.output import build_trajectory, close_block_scores
from npr.forkjoin.slots import SlotManager
from npr.forkjoin.state import (
    TAIL,
    BranchEnd,
    EngineEvent,
    Finish,
    Fork,
    Join,
    Plan,
    Preempt,
    Prefilled,
    Request,
    Seq,
    SeqState,
    Work,
    WorkResult,
)
from npr.schema import Event, Tracker
from npr.templates import Templates


class ForkJoinController:
    """Decides structure, budgets, attribution and slots for many requests; owns no tensors."""

    def __init__(self, limits: Limits, templates: Templates, stop_token_ids: Iterable[int],
                 slots: SlotManager | None = None, max_running: int | None = None, feed_limit: int | None = None):
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be npr.forkjoin.Limits, got {type(limits).__name__}")
        self.limits = limits  # the default of add_request
        self.templates = templates
        self.tags = templates.tags
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        if not self.stop_token_ids | frozenset(limits.stop_token_ids):
            raise ValueError("no stop token: pass the tokenizer's EOS id(s) or Limits(stop_token_ids=...)")
        self.slots = slots if slots is not None else SlotManager()
        if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
            raise ValueError(f"max_running must be an int >= 1 or None, got {max_running!r}")
        if feed_limit is not None:
            check_int("feed_limit", feed_limit, 1)
        self.max_running = max_running
        self.feed_limit = feed_limit
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._admitted = 0
        self._min_fork_budget: dict[int, int] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def add_request(self, req_id: Any, prompt_ids: Sequence[int], limits: Limits | None = None,
                    prefilled: Prefilled | None = None) -> Request:
        """Queue a request. `limits` defaults to the controller's; `prefilled`: the engine ran the prompt."""
        limits = self.limits if limits is None else limits
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be npr.forkjoin.Limits, got {type(limits).__name__}")
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError(f"request {req_id!r} has an empty prompt; a prompt needs at least one token")
        stops = self.stop_token_ids | frozenset(limits.stop_token_ids)
        if not stops:
            raise ValueError(f"request {req_id!r} has no stop token: pass Limits(stop_token_ids=...)")
        if prefilled is not None and len(prefilled.slots) != len(ids):
            raise ValueError(f"request {req_id!r}: {len(prefilled.slots)} prefilled slots for a prompt of {len(ids)}")
        capacity = self.slots.capacity
        if prefilled is None and capacity is not None and len(ids) + 1 > capacity:
            raise ValueError(f"request {req_id!r}: its prompt of {len(ids)} tokens cannot fit {capacity} KV slots; "
                             "raise the engine's KV slot limit")
        request = Request(req_id, ids, limits, stops, prefilled)
        self._reset(request)
        self.waiting.append(request)
        return request

    def _reset(self, request: Request) -> None:
        prompt = request.prompt_ids
        for name in ("branches", "parts", "refused_forks", "notes", "blocks"):
            setattr(request, name, [])
        request.trunk_cut = request.total_tokens = request.trunk_path_tokens = request.num_forks = 0
        request.max_width, request.fork_position, request.fork_due, request.started = 1, -1, False, False
        request.tracker = Tracker(self.tags, request.limits.max_branches)
        if request.prefilled is None:
            request.trunk = Seq(request, branch=0, block=0, cursor=len(prompt), pending=list(prompt),
                                pending_positions=list(range(len(prompt))))
        else:
            request.trunk = Seq(request, branch=0, block=0, cursor=len(prompt), context=list(request.prefilled.slots))

    def min_fork_budget(self, limits: Limits) -> int:
        """The budget a fork must leave: min_fork_budget, at least the longest forced header plus one."""
        got = self._min_fork_budget.get(limits.max_branches)
        if got is None:
            longest = max(len(self.templates.branch_header(i)) for i in range(1, limits.max_branches + 1))
            got = self._min_fork_budget[limits.max_branches] = longest + 1
        return max(limits.min_fork_budget, got)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request: Request) -> list[EngineEvent]:
        """Abort a request. Pending tokens are fed once more (no sampling) so every output token keeps
        a log-prob; the Finish comes from that step's commit (at once when nothing is pending)."""
        if request.is_finished or request.aborting:
            return []
        request.aborting = True
        request.fork_due = False
        if request in self.waiting:
            self.waiting.remove(request)
            return [self._finish(request, "abort")]
        if not any(s.pending for s in request.live()):
            return [self._finish(request, "abort")]
        return []

    def release_all(self) -> None:
        """The engine failed: give every slot back and forget every request."""
        for request in list(self.running):
            self._release(request)
        self.running.clear()
        self.waiting.clear()

    # -- plan ------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        events: list[EngineEvent] = []
        self._admit(events)
        works: list[Work] = []
        for request in list(self.running):
            if request.is_finished:
                continue
            reserved = 0
            request_works = []
            for seq in request.live():
                work = self._work(seq)
                if work.sample and not self._has_budget(seq, reserved):
                    work.sample = False
                    if seq.is_trunk:  # nothing follows the trunk's last token: no feed needed
                        request.notes.append("stopped at the token budget")
                        events.append(self._finish(request, "length"))
                        break
                    seq.end = BranchEnd.LENGTH
                reserved += work.sample
                request_works.append(work)
            else:
                works += request_works
        works = self._fit(works, events)
        for work in works:  # owned from now on, so a failure before the commit still returns them
            work.slots = self.slots.alloc(len(work.tokens), work.seq)
            work.seq.own += work.slots
        return Plan(works, events)

    def _admit(self, events: list[EngineEvent]) -> None:
        while self.waiting and (self.max_running is None or len(self.running) < self.max_running):
            request = self.waiting[0]
            own = 1 if request.prefilled is not None else request.prompt_len
            need = own + sum(len(s.pending) for r in self.running for s in r.live())
            if self.running and not self.slots.can_alloc(need):
                return
            self.waiting.popleft()
            request.order = self._admitted
            self._admitted += 1
            self.running.append(request)
            if request.prefilled is not None and not request.started:
                request.started = True
                first = request.prefilled
                events += self._on_token(request.trunk, int(first.token), float(first.logprob))

    def _has_budget(self, seq: Seq, reserved: int) -> bool:
        request = seq.request
        if request.total_tokens + reserved + 1 > request.limits.total_budget:
            return False
        path = request.trunk_path_tokens + (0 if seq.is_trunk else len(seq.tokens))
        return path + 1 <= request.limits.max_new_tokens

    def _work(self, seq: Seq) -> Work:
        """Feed the pending tokens (up to feed_limit); rows score the fed forced tokens' successors; the
        last row also scores the successor sequence's first token and samples, once nothing is left."""
        pending, request = seq.pending, seq.request
        count = len(pending) if self.feed_limit is None else min(len(pending), self.feed_limit)
        num_prompt = max(0, seq.num_prompt_pending)
        work = Work(seq, pending[:count], seq.pending_positions[:count], seq.context, [], False,
                    num_prompt=min(num_prompt, count))
        for j in range(count):  # row j scores the pending token after it (a forced run)
            i = j + 1
            if num_prompt <= i < len(pending):
                index = seq.num_fed + i - num_prompt
                if seq.logprobs[index] is None:
                    work.scores.append((j, pending[i]))
                    work.targets.append(index)
        if count < len(pending):
            return work
        successor = self._successor_token(seq)
        if successor is not None:
            work.scores.append((count - 1, successor))
            work.targets.append(TAIL)
        work.sample = not (request.aborting or seq.drain or request.fork_due)
        return work

    def _successor_token(self, seq: Seq) -> int | None:
        """The first token of the sequence that follows `seq` in the linearised response, when that is
        another sequence: branch 1's <step> after a forking </guideline>, the next branch's <step>,
        the join's <takeaway> after the last branch."""
        if seq.is_trunk:
            return self.tags.step_open if seq.request.fork_due else None
        is_last = seq is seq.request.branches[-1]
        return self.tags.takeaway_open if is_last else self.tags.step_open

    def _forks_due(self, works: list[Work]) -> list[int]:
        """Branch counts of the forks this step's commit makes (a due trunk feeding its last token)."""
        return [w.seq.request.tracker.num_plans for w in works
                if w.seq.is_trunk and w.seq.request.fork_due and len(w.tokens) == len(w.seq.pending)]

    def _fit(self, works: list[Work], events: list[EngineEvent]) -> list[Work]:
        """Make the step's new tokens (and the forks' new branches) fit the engine: preempt the
        latest-admitted requests; a request alone that cannot grow finishes with "length"."""
        need = sum(len(w.tokens) for w in works)
        while not self.slots.can_alloc(need, self._forks_due(works)):
            victim = max(self.running, key=lambda r: r.order)
            if len(self.running) > 1:
                self._release(victim)
                self.running.remove(victim)
                victim.num_preemptions += 1
                self._reset(victim)
                self.waiting.appendleft(victim)
                events.append(Preempt(victim))
            else:
                victim.notes.append(f"KV cache full ({self.slots.capacity} slots): stopped")
                events.append(self._finish(victim, "length"))
            works = [w for w in works if w.seq.request is not victim]
            need = sum(len(w.tokens) for w in works)
        return works

    # -- commit ----------------------------------------------------------------------------------
    def commit(self, plan: Plan, results: Sequence[WorkResult]) -> list[EngineEvent]:
        """Record the engine's report for `plan`; returns the fork, join and finish events."""
        if len(results) != len(plan.works):
            raise ValueError(f"{len(results)} results for {len(plan.works)} works; report one per work, in order")
        events: list[EngineEvent] = []
        touched: dict[int, Request] = {}
        for work, result in zip(plan.works, results):
            seq = work.seq
            request = seq.request
            if len(result.scores) != len(work.scores):
                raise ValueError(f"{len(result.scores)} scores reported for {len(work.scores)} requested")
            if request.is_finished:  # finished earlier in this commit (its slots are back already)
                continue
            touched[id(request)] = request
            for target, value in zip(work.targets, result.scores):
                if target == TAIL:
                    seq.tail_score = float(value)
                else:
                    seq.logprobs[target] = float(value)
            seq.context += work.slots
            count = len(work.tokens)
            seq.num_fed += count - work.num_prompt
            del seq.pending[:count], seq.pending_positions[:count]
            if seq.pending or request.aborting:
                continue
            if seq.is_trunk and request.fork_due:
                request.fork_due = False
                events.append(self._fork(request))
            elif work.sample:
                if result.token is None or result.logprob is None:
                    raise ValueError("a work that samples must report its token and log-prob")
                events += self._on_token(seq, int(result.token), float(result.logprob))
            else:  # a branch that drained (</step>, EOS) or ran out of budget
                seq.end = seq.end or BranchEnd.LENGTH
                seq.state = SeqState.DONE
                events += self._maybe_join(request)
        for request in touched.values():
            if request.aborting and not request.is_finished and not any(s.pending for s in request.live()):
                events.append(self._finish(request, "abort"))
        return events

    def _emit(self, seq: Seq, token: int, logprob: float | None) -> None:
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        seq.positions.append(seq.cursor)
        seq.pending.append(token)
        seq.pending_positions.append(seq.cursor)
        seq.cursor += 1
        seq.request.total_tokens += 1
        if seq.is_trunk:
            seq.request.trunk_path_tokens += 1

    def _on_token(self, seq: Seq, token: int, logprob: float) -> list[EngineEvent]:
        request = seq.request
        tags = self.tags
        if seq.is_trunk:
            self._emit(seq, token, logprob)
            event = request.tracker.feed(token)
            if token in request.stop_token_ids:
                return [self._finish(request, "stop")]
            if event is Event.FORK:
                reason = self._fork_refusal(request, request.tracker.num_plans)
                if reason:
                    request.tracker.refuse_fork(reason)
                    request.refused_forks.append(request.prompt_len + len(seq.tokens) - 1)
                    request.notes.append(reason)
                else:
                    request.fork_due = True
            elif event is Event.NO_FORK:
                request.notes.append(request.tracker.issues[-1].detail)
            return []
        if token == tags.step_open or token == tags.takeaway_open:
            request.notes.append(f"branch {seq.branch} wrote {tags.name_of(token)} inside its step: "
                                 "token dropped, step left unclosed")
            seq.end, seq.state = BranchEnd.STRAY, SeqState.DONE
            return self._maybe_join(request)
        self._emit(seq, token, logprob)
        if token == tags.step_close:
            seq.end, seq.drain = BranchEnd.CLOSED, True
        elif token in request.stop_token_ids:
            request.notes.append(f"branch {seq.branch} stopped (token {token}) inside its step")
            seq.end, seq.drain = BranchEnd.STOP, True
        return []

    def _fork_refusal(self, request: Request, num_plans: int) -> str | None:
        limits = request.limits
        if not limits.parallel:
            return "parallel decoding is off (parallel=False)"
        path_left = limits.max_new_tokens - request.trunk_path_tokens
        total_left = (limits.total_budget - request.total_tokens) // num_plans
        budget = self.min_fork_budget(limits)
        if min(path_left, total_left) < budget:
            return (f"fork of {num_plans} branches refused: {min(path_left, total_left)} tokens left per branch "
                    f"< min_fork_budget {budget}; continuing sequentially")
        return None

    def _fork(self, request: Request) -> Fork:
        trunk = request.trunk
        num = request.tracker.num_plans
        request.fork_position = trunk.positions[-1]  # g: position of </guideline>
        request.num_forks += 1
        children = []
        for i in range(1, num + 1):
            header = self.templates.branch_header(i)
            child = Seq(request, branch=i, block=request.num_forks, cursor=request.fork_position + 1,
                        context=list(trunk.context), header_len=len(header))
            for token in header:
                self._emit(child, token, None)
            children.append(child)
        children[0].logprobs[0] = trunk.tail_score
        trunk.state = SeqState.PARKED
        request.parts.append((trunk, request.trunk_cut, len(trunk.tokens)))
        request.trunk_cut = len(trunk.tokens)
        request.branches = children
        request.tracker.num_branches = num  # the trunk's tracker does not see branch tokens
        request.max_width = max(request.max_width, num)
        return Fork(request, trunk, tuple(children))

    def _close_block(self, request: Request) -> tuple[Seq, ...]:
        """Score each later branch's first token from its predecessor's tail; move the branches to the output."""
        children = tuple(request.branches)
        close_block_scores(request.branches)
        request.trunk_path_tokens = request.critical_path_tokens
        request.parts += [(child, 0, len(child.tokens)) for child in children]
        request.branches = []
        return children

    def _maybe_join(self, request: Request) -> list[EngineEvent]:
        if request.is_finished or any(b.state is not SeqState.DONE for b in request.branches):
            return []
        ends = [b.end for b in request.branches]
        request.blocks.append(ends)
        longest = max(len(b.tokens) for b in request.branches)
        children = self._close_block(request)
        trunk = request.trunk
        trunk.cursor = request.fork_position + 1 + longest
        for child in children:  # the parent's slot list becomes prefix + branch 1 + ... + branch n
            self.slots.transfer(child.own, child, trunk)
            trunk.own += child.own
            trunk.context += child.own
            child.own = []
        if BranchEnd.LENGTH in ends:
            return [self._finish(request, "length")]
        if BranchEnd.STOP in ends:
            return [self._finish(request, "stop")]
        if not self._has_budget(trunk, 0):
            request.notes.append("stopped at the token budget at the join")
            return [self._finish(request, "length")]
        trunk.state = SeqState.ACTIVE
        self._emit(trunk, self.tags.takeaway_open, children[-1].tail_score)
        request.tracker.feed(self.tags.takeaway_open)
        return [Join(request, trunk, children)]

    # -- finish ----------------------------------------------------------------------------------
    def _release(self, request: Request) -> None:
        for seq in request.seqs():
            self.slots.free(seq.own, seq)
            seq.own = []

    def _finish(self, request: Request, reason: str) -> Finish:
        request.finish_reason = reason
        self._release(request)
        if request.branches:  # an open block: its branches stay in the output, in order
            self._close_block(request)
        if request in self.running:
            self.running.remove(request)
        trajectory, positions = build_trajectory(request)
        return Finish(request, reason, trajectory, positions)
