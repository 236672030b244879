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

Invariants (checked by the contract harness, tests/forkjoin): build_layout of a finished request gives
the positions assigned here; total tokens <= max_total_tokens; critical path <= max_new_tokens; every
output token scored exactly once; every slot returned."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from npr.forkjoin.limits import Limits
from npr.forkjoin.slots import SlotManager
from npr.forkjoin.trajectory import Trajectory
from npr.schema import Event, Tracker
from npr.templates import Templates


class SeqState(enum.Enum):
    ACTIVE = "active"  # feeds its pending tokens every step, then samples one (budget allowing)
    PARKED = "parked"  # a trunk waiting for its branches
    DONE = "done"


class BranchEnd(enum.Enum):
    CLOSED = "closed"  # wrote </step>
    STRAY = "stray"  # wrote <step> or <takeaway> inside its step: token dropped, branch ends unclosed
    STOP = "stop"  # wrote EOS / a stop token inside its step
    LENGTH = "length"  # ran out of budget


_TAIL = -1  # a score target: the sequence's tail score (its linear successor's first token)


@dataclass(eq=False)
class Seq:
    """One decoding sequence: a request's trunk (branch 0) or one branch of the open block."""

    request: "Request"
    branch: int
    block: int  # forks of the request up to and including this sequence's (0 for the trunk)
    cursor: int  # position of the next token it emits
    pending: list[int] = field(default_factory=list)  # tokens (the prompt, or emitted ones) not fed yet
    pending_positions: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # its own response tokens
    logprobs: list[float | None] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    num_fed: int = 0  # tokens[:num_fed] have K/V
    context: list[int] = field(default_factory=list)  # slots it attends to: shared prefix, then its own
    own: list[int] = field(default_factory=list)  # slots it owns
    header_len: int = 0  # forced tokens that open a branch (<step> + "\n{i}:"); 0 for the trunk
    state: SeqState = SeqState.ACTIVE
    end: BranchEnd | None = None
    drain: bool = False  # feed the pending tokens, then end without sampling
    tail_score: float | None = None  # log-prob of its linear successor's first token (last fed row)
    engine: Any = None  # the engine's own per-sequence state (RNG, ...)

    @property
    def is_trunk(self) -> bool:
        return self.branch == 0


@dataclass(eq=False)
class Request:
    """Controller state of one request."""

    req_id: Any
    prompt_ids: list[int]
    order: int = 0  # admission order (preemption picks the latest)
    tracker: Tracker | None = None
    trunk: Seq | None = None
    branches: list[Seq] = field(default_factory=list)
    parts: list[tuple[Seq, int, int]] = field(default_factory=list)  # finished output: token ranges of seqs
    trunk_cut: int = 0  # trunk tokens before this index are already in `parts`
    total_tokens: int = 0  # generated tokens so far (what max_total_tokens bounds)
    trunk_path_tokens: int = 0  # critical path excluding the open block's branches
    fork_position: int = -1  # g of the open block
    num_forks: int = 0
    max_width: int = 1
    fork_due: bool = False  # the trunk wrote a </guideline> that forks once it is fed
    aborting: bool = False
    refused_forks: list[int] = field(default_factory=list)  # absolute offsets of declined </guideline>
    notes: list[str] = field(default_factory=list)
    blocks: list[list[BranchEnd]] = field(default_factory=list)
    finish_reason: str | None = None
    num_preemptions: int = 0

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def critical_path_tokens(self) -> int:
        return self.trunk_path_tokens + max((len(b.tokens) for b in self.branches), default=0)

    def live(self) -> list[Seq]:
        """Sequences that feed this step, trunk first, branches in order."""
        if self.is_finished:
            return []
        return [s for s in [self.trunk, *self.branches] if s.state is SeqState.ACTIVE]

    def seqs(self) -> list[Seq]:
        return [self.trunk, *self.branches] if self.trunk is not None else list(self.branches)


@dataclass(eq=False)
class Work:
    """What the engine does for one sequence in one step (see the module docstring)."""

    seq: Seq
    tokens: list[int]
    positions: list[int]
    context: list[int]  # slots every token of this work attends to; token j also sees slots[:j+1]
    scores: list[tuple[int, int]]  # (row j of this work, token id): log_softmax(raw logits[j])[token]
    sample: bool  # then choose one token from the last row's logits
    slots: list[int] = field(default_factory=list)  # where each token's K/V is written
    targets: list[int] = field(default_factory=list)  # per score: index into seq.logprobs, or _TAIL


@dataclass
class WorkResult:
    """The engine's report for one Work: the requested scores in order, and the sampled token with
    the log-softmax of the raw logits (temperature 1, no processors) at it."""

    scores: Sequence[float] = ()
    token: int | None = None
    logprob: float | None = None


@dataclass(frozen=True)
class Fork:
    request: Request
    parent: Seq
    children: tuple[Seq, ...]


@dataclass(frozen=True)
class Join:
    request: Request
    parent: Seq
    children: tuple[Seq, ...]


@dataclass(frozen=True)
class Preempt:
    """The request's slots were taken back; it starts over when slots free up (same seed, same output)."""

    request: Request


@dataclass(frozen=True)
class Finish:
    request: Request
    reason: str
    trajectory: Trajectory
    positions: tuple[int, ...]  # the position assigned to each output token


EngineEvent = Fork | Join | Preempt | Finish


@dataclass
class Plan:
    works: list[Work]
    events: list[EngineEvent]


class ForkJoinController:
    """Decides structure, budgets, attribution and slots for many requests; owns no tensors."""

    def __init__(self, limits: Limits, templates: Templates, stop_token_ids: Iterable[int],
                 slots: SlotManager | None = None, max_running: int | None = None):
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be npr.forkjoin.Limits, got {type(limits).__name__}")
        self.limits = limits
        self.templates = templates
        self.tags = templates.tags
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids) | frozenset(limits.stop_token_ids)
        if not self.stop_token_ids:
            raise ValueError("no stop token: pass the tokenizer's EOS id(s) or Limits(stop_token_ids=...)")
        self.slots = slots if slots is not None else SlotManager()
        if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
            raise ValueError(f"max_running must be an int >= 1 or None, got {max_running!r}")
        self.max_running = max_running
        # A fork must leave room for its longest forced header plus one token in every branch.
        longest = max(len(templates.branch_header(i)) for i in range(1, limits.max_branches + 1))
        self.min_fork_budget = max(limits.min_fork_budget, longest + 1)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._admitted = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def add_request(self, req_id: Any, prompt_ids: Sequence[int]) -> Request:
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError(f"request {req_id!r} has an empty prompt; a prompt needs at least one token")
        capacity = self.slots.capacity
        if capacity is not None and len(ids) + 1 > capacity:
            raise ValueError(f"request {req_id!r}: its prompt of {len(ids)} tokens cannot fit {capacity} KV slots; "
                             "raise the engine's KV slot limit")
        request = Request(req_id, ids)
        self._reset(request)
        self.waiting.append(request)
        return request

    def _reset(self, request: Request) -> None:
        prompt = request.prompt_ids
        for name in ("branches", "parts", "refused_forks", "notes", "blocks"):
            setattr(request, name, [])
        request.trunk_cut = request.total_tokens = request.trunk_path_tokens = request.num_forks = 0
        request.max_width, request.fork_position, request.fork_due = 1, -1, False
        request.tracker = Tracker(self.tags, self.limits.max_branches)
        request.trunk = Seq(request, branch=0, block=0, cursor=len(prompt), pending=list(prompt),
                            pending_positions=list(range(len(prompt))))

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
        self._admit()
        works: list[Work] = []
        for request in list(self.running):
            reserved = 0
            request_works = []
            for seq in request.live():
                sample = not (request.aborting or seq.drain or request.fork_due)
                if sample and not self._has_budget(seq, reserved):
                    sample = False
                    if seq.is_trunk:  # nothing follows the trunk's last token: no feed needed
                        request.notes.append("stopped at the token budget")
                        events.append(self._finish(request, "length"))
                        break
                    seq.end = BranchEnd.LENGTH
                reserved += sample
                request_works.append(self._work(seq, sample))
            else:
                works += request_works
        works = self._fit(works, events)
        for work in works:  # owned from now on, so a failure before the commit still returns them
            work.slots = self.slots.alloc(len(work.tokens), work.seq)
            work.seq.own += work.slots
        return Plan(works, events)

    def _admit(self) -> None:
        while self.waiting and (self.max_running is None or len(self.running) < self.max_running):
            request = self.waiting[0]
            need = request.prompt_len + sum(len(s.pending) for r in self.running for s in r.live())
            if self.running and not self.slots.can_alloc(need):
                return
            self.waiting.popleft()
            request.order = self._admitted
            self._admitted += 1
            self.running.append(request)

    def _has_budget(self, seq: Seq, reserved: int) -> bool:
        request = seq.request
        if request.total_tokens + reserved + 1 > self.limits.total_budget:
            return False
        path = request.trunk_path_tokens + (0 if seq.is_trunk else len(seq.tokens))
        return path + 1 <= self.limits.max_new_tokens

    def _work(self, seq: Seq, sample: bool) -> Work:
        tokens = seq.pending
        work = Work(seq, list(tokens), list(seq.pending_positions), list(seq.context), [], sample)
        offset = len(tokens) - (len(seq.tokens) - seq.num_fed)  # prompt tokens before the response ones
        for j in range(max(1, offset), len(tokens)):  # a forced run: rows score the tokens after them
            index = seq.num_fed + j - offset
            if seq.logprobs[index] is None:
                work.scores.append((j - 1, tokens[j]))
                work.targets.append(index)
        successor = self._successor_token(seq)
        if successor is not None:
            work.scores.append((len(tokens) - 1, successor))
            work.targets.append(_TAIL)
        return work

    def _successor_token(self, seq: Seq) -> int | None:
        """The first token of the sequence that follows `seq` in the linearised response, when that is
        another sequence: branch 1's <step> after a forking </guideline>, the next branch's <step>,
        the join's <takeaway> after the last branch."""
        if seq.is_trunk:
            return self.tags.step_open if seq.request.fork_due else None
        is_last = seq is seq.request.branches[-1]
        return self.tags.takeaway_open if is_last else self.tags.step_open

    def _fit(self, works: list[Work], events: list[EngineEvent]) -> list[Work]:
        """Make the step's new tokens fit the slots: preempt the latest-admitted requests; a request
        alone that cannot grow finishes with "length"."""
        need = sum(len(w.tokens) for w in works)
        while not self.slots.can_alloc(need):
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
                if target == _TAIL:
                    seq.tail_score = float(value)
                else:
                    seq.logprobs[target] = float(value)
            seq.context += work.slots
            seq.num_fed = len(seq.tokens)
            seq.pending, seq.pending_positions = [], []
            if request.aborting:
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
            if token in self.stop_token_ids:
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
        elif token in self.stop_token_ids:
            request.notes.append(f"branch {seq.branch} stopped (token {token}) inside its step")
            seq.end, seq.drain = BranchEnd.STOP, True
        return []

    def _fork_refusal(self, request: Request, num_plans: int) -> str | None:
        if not self.limits.parallel:
            return "parallel decoding is off (parallel=False)"
        path_left = self.limits.max_new_tokens - request.trunk_path_tokens
        total_left = (self.limits.total_budget - request.total_tokens) // num_plans
        if min(path_left, total_left) < self.min_fork_budget:
            return (f"fork of {num_plans} branches refused: {min(path_left, total_left)} tokens left per branch "
                    f"< min_fork_budget {self.min_fork_budget}; continuing sequentially")
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
        for before, child in zip(children, children[1:]):
            child.logprobs[0] = before.tail_score
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
        trajectory, positions = self._trajectory(request)
        return Finish(request, reason, trajectory, positions)

    def _trajectory(self, request: Request) -> tuple[Trajectory, tuple[int, ...]]:
        parts = request.parts + ([(request.trunk, request.trunk_cut, len(request.trunk.tokens))])
        tokens: list[int] = []
        logprobs: list[float] = []
        positions: list[int] = []
        blocks_seen: dict[int, int] = {}
        cut = None
        previous_fed = True
        for seq, start, end in parts:
            for k in range(start, end):
                logprob = seq.logprobs[k]
                if logprob is None or (k == start and not previous_fed):
                    cut = len(tokens)
                    break
                tokens.append(seq.tokens[k])
                logprobs.append(logprob)
                positions.append(seq.positions[k])
                if not seq.is_trunk:
                    blocks_seen[seq.block] = max(blocks_seen.get(seq.block, 0), seq.branch)
            if cut is not None:
                break
            if end > start:
                previous_fed = end <= seq.num_fed
        notes = list(request.notes)
        if cut is not None:  # only when the KV cache ran out before pending tokens could be fed
            notes.append(f"output cut at token {cut}: the tokens after it were never fed, so they have no log-prob")
        prompt_len = request.prompt_len
        stats = {"total_tokens": len(tokens),
                 "critical_path_tokens": max(positions) - prompt_len + 1 if positions else 0,
                 "num_forks": len(blocks_seen),
                 "max_width": max(blocks_seen.values(), default=1)}
        trajectory = Trajectory(
            prompt_ids=list(request.prompt_ids), token_ids=tokens, logprobs=logprobs,
            finish_reason=request.finish_reason or "abort", stats=stats,
            refused_forks=[o for o in request.refused_forks if o < prompt_len + len(tokens)],
            blocks=[[end.value for end in ends] for ends in request.blocks], notes=notes)
        return trajectory, tuple(positions)
