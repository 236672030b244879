"""Engine-agnostic fork-join controller (pure Python; no torch, no host types): the per-request state
machine SEQUENTIAL -> (</guideline>) validate plans -> FORK -> BRANCHING -> JOIN -> SEQUENTIAL,
with the budgets of DESIGN §5. An engine asks it which token to force, tells it which token was
chosen and when a sequence's pending tokens were fed, and carries out the actions it returns.

Invariant: the request's linearised output is trunk tokens plus, per forked block, the branches'
tokens in branch order; positions follow DESIGN §4 exactly like `npr.layout.build_layout`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from npr.decoding.config import DecodingConfig
from npr.layout import Templates
from npr.schema import Event, Tracker


class SeqState(enum.Enum):
    ACTIVE = "active"  # chooses a token every step
    PARKED = "parked"  # a trunk waiting for its branches
    DRAINING = "draining"  # chose its last token; done once that token is fed
    DONE = "done"


class BranchEnd(enum.Enum):
    CLOSED = "closed"  # chose </step>
    STRAY = "stray"  # chose <step> or <takeaway> inside the open step: token dropped, branch ends unclosed
    STOP = "stop"  # chose EOS / a stop token inside the step
    LENGTH = "length"  # ran out of budget


@dataclass(eq=False)
class Seq:
    """One decoding sequence: a request's trunk (branch 0) or one branch of the open block."""

    request: "Request"
    branch: int
    next_position: int
    tokens: list[int] = field(default_factory=list)  # this sequence's own response tokens
    logprobs: list[float | None] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # chosen, not yet fed
    forced: list[int] = field(default_factory=list)  # to be chosen next without sampling
    state: SeqState = SeqState.ACTIVE
    end: BranchEnd | None = None
    header_len: int = 0  # forced tokens that open a branch (<step> + "\n{i}:"); 0 for the trunk
    logprob_source: "Seq | None" = None  # for a branch's first token: the sibling before it (linear order)
    next_sibling: "Seq | None" = None
    engine: Any = None  # the engine's own per-sequence state (slots, rows, RNG, ...)

    @property
    def is_trunk(self) -> bool:
        return self.branch == 0


@dataclass(eq=False)
class Request:
    """Controller state of one request."""

    req_id: Any
    prompt_len: int
    tracker: Tracker
    trunk: Seq = None  # type: ignore[assignment]
    branches: list[Seq] = field(default_factory=list)
    parts: list[tuple[Seq, int, int]] = field(default_factory=list)  # finished output: token ranges of seqs
    trunk_cut: int = 0  # trunk tokens before this index are already in `parts`
    total_tokens: int = 0  # == length of the linearised response so far
    trunk_path_tokens: int = 0  # critical path excluding the open block's branches
    fork_position: int = -1  # g of the open block
    num_forks: int = 0
    max_width: int = 1
    is_fork_due: bool = False
    refused_forks: list[int] = field(default_factory=list)  # absolute offsets of declined </guideline>
    notes: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    blocks: list[list[BranchEnd]] = field(default_factory=list)

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def critical_path_tokens(self) -> int:
        return self.trunk_path_tokens + max((len(b.tokens) for b in self.branches), default=0)

    def linear(self) -> tuple[list[int], list[float | None]]:
        """Linearised response ids and log-probs: trunk runs and, per block, the branches in order."""
        parts = self.parts + ([(self.trunk, self.trunk_cut, len(self.trunk.tokens))] if self.trunk else [])
        tokens: list[int] = []
        logprobs: list[float | None] = []
        for seq, start, end in parts:
            tokens += seq.tokens[start:end]
            logprobs += seq.logprobs[start:end]
        return tokens, logprobs

    def live(self) -> list[Seq]:
        if self.is_finished:
            return []
        return [s for s in [self.trunk, *self.branches] if s.state in (SeqState.ACTIVE, SeqState.DRAINING)]


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
class BranchDone:
    seq: Seq


@dataclass(frozen=True)
class Finish:
    request: Request
    reason: str


Action = Fork | Join | BranchDone | Finish


class ForkJoinController:
    """Decides structure and budgets for many requests; owns no tensors."""

    def __init__(self, config: DecodingConfig, templates: Templates, stop_token_ids: set[int]):
        self.config = config
        self.templates = templates
        self.tags = templates.tags
        self.stop_token_ids = frozenset(stop_token_ids) | frozenset(config.stop_token_ids)
        # A fork must leave room for its forced header plus at least one token per branch.
        self.min_fork_budget = max(config.min_fork_budget, len(templates.branch_header(config.max_branches)) + 1)

    # -- lifecycle ---------------------------------------------------------------------------
    def add_request(self, req_id: Any, prompt_ids: list[int]) -> Request:
        request = Request(req_id=req_id, prompt_len=len(prompt_ids), tracker=Tracker(self.tags, self.config.max_branches))
        request.trunk = Seq(request, branch=0, next_position=0, pending=list(prompt_ids))
        return request

    def abort(self, request: Request) -> Finish:
        return self._finish(request, "abort")

    # -- per step ------------------------------------------------------------------------------
    def forced_token(self, seq: Seq) -> int | None:
        return seq.forced[0] if seq.forced else None

    def has_budget(self, seq: Seq) -> bool:
        request = seq.request
        if request.total_tokens >= self.config.total_budget:
            return False
        path = request.trunk_path_tokens + (len(seq.tokens) if not seq.is_trunk else 0)
        return path < self.config.max_new_tokens

    def out_of_budget(self, seq: Seq) -> list[Action]:
        """The engine found `has_budget(seq)` False before choosing for an ACTIVE sequence."""
        request = seq.request
        if seq.is_trunk:
            request.notes.append("stopped at the token budget")
            return [self._finish(request, "length")]
        return self._end_branch(seq, BranchEnd.LENGTH, drain=False)

    def on_token(self, seq: Seq, token: int, logprob: float | None) -> list[Action]:
        """Record the token chosen for `seq` (forced or sampled) with its log-prob."""
        request = seq.request
        if seq.forced and seq.forced[0] == token:
            seq.forced.pop(0)
            if not seq.is_trunk:  # a branch header written by the engine
                self._append(seq, token, logprob)
                return []
        if seq.is_trunk:
            return self._on_trunk_token(request, seq, token, logprob)
        if token == self.tags.step_open or token == self.tags.takeaway_open:
            request.notes.append(f"branch {seq.branch} wrote {self.tags.name_of(token)} inside its step: "
                                 "token dropped, step left unclosed")
            return self._end_branch(seq, BranchEnd.STRAY, drain=False)
        self._append(seq, token, logprob)
        if token == self.tags.step_close:
            return self._end_branch(seq, BranchEnd.CLOSED, drain=True)
        if token in self.stop_token_ids:
            request.notes.append(f"branch {seq.branch} stopped (token {token}) inside its step")
            return self._end_branch(seq, BranchEnd.STOP, drain=True)
        return []

    def on_fed(self, seq: Seq) -> list[Action]:
        """The engine fed `seq.pending` (positions next_position...) and holds their logits."""
        seq.next_position += len(seq.pending)
        seq.pending = []
        request = seq.request
        if seq.state is SeqState.DRAINING:
            seq.state = SeqState.DONE
            return [BranchDone(seq)] + self._maybe_join(request)
        if seq.is_trunk and request.is_fork_due:
            request.is_fork_due = False
            return [self._fork(request)]
        return []

    # -- transitions ---------------------------------------------------------------------------
    def _append(self, seq: Seq, token: int, logprob: float | None) -> None:
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        seq.pending.append(token)
        seq.request.total_tokens += 1
        if seq.is_trunk:
            seq.request.trunk_path_tokens += 1

    def _on_trunk_token(self, request: Request, seq: Seq, token: int, logprob: float | None) -> list[Action]:
        self._append(seq, token, logprob)
        event = request.tracker.feed(token)
        if token in self.stop_token_ids:
            return [self._finish(request, "stop")]
        if event is Event.FORK:
            num_plans = request.tracker.num_plans
            reason = self._fork_refusal(request, num_plans)
            if reason:
                request.tracker.refuse_fork(reason)
                request.refused_forks.append(request.prompt_len + request.total_tokens - 1)
                request.notes.append(reason)
            else:
                request.is_fork_due = True  # fork once </guideline> is fed
        elif event is Event.NO_FORK:
            request.notes.append(request.tracker.issues[-1].detail)
        return []

    def _fork_refusal(self, request: Request, num_plans: int) -> str | None:
        if not self.config.parallel:
            return "parallel decoding is off (DecodingConfig.parallel=False)"
        path_left = self.config.max_new_tokens - request.trunk_path_tokens
        total_left = (self.config.total_budget - request.total_tokens) // num_plans
        if min(path_left, total_left) < self.min_fork_budget:
            return (f"fork of {num_plans} branches refused: {min(path_left, total_left)} tokens left per branch "
                    f"< min_fork_budget {self.min_fork_budget}; continuing sequentially")
        return None

    def _fork(self, request: Request) -> Fork:
        trunk = request.trunk
        num = request.tracker.num_plans
        request.fork_position = trunk.next_position - 1  # g: position of </guideline>
        children = []
        for i in range(1, num + 1):
            header = self.templates.branch_header(i)
            child = Seq(request, branch=i, next_position=request.fork_position + 1, forced=list(header),
                        header_len=len(header), logprob_source=children[-1] if children else None)
            if children:
                children[-1].next_sibling = child
            children.append(child)
        trunk.state = SeqState.PARKED
        request.parts.append((trunk, request.trunk_cut, len(trunk.tokens)))
        request.trunk_cut = len(trunk.tokens)
        request.branches = children
        request.tracker.num_branches = num  # the trunk's tracker does not see branch tokens
        request.num_forks += 1
        request.max_width = max(request.max_width, num)
        return Fork(request, trunk, tuple(children))

    def _end_branch(self, seq: Seq, end: BranchEnd, drain: bool) -> list[Action]:
        seq.end = end
        if drain:
            seq.state = SeqState.DRAINING
            return []
        seq.state = SeqState.DONE
        return [BranchDone(seq)] + self._maybe_join(seq.request)

    def _maybe_join(self, request: Request) -> list[Action]:
        if request.is_finished or any(b.state is not SeqState.DONE for b in request.branches):
            return []
        ends = [b.end for b in request.branches]
        request.blocks.append(ends)
        children = tuple(request.branches)
        request.trunk_path_tokens = request.critical_path_tokens
        request.parts += [(child, 0, len(child.tokens)) for child in children]
        trunk = request.trunk
        trunk.next_position = request.fork_position + 1 + max(len(c.tokens) for c in children)
        request.branches = []
        if BranchEnd.LENGTH in ends:
            return [self._finish(request, "length")]
        if BranchEnd.STOP in ends:
            return [self._finish(request, "stop")]
        trunk.state = SeqState.ACTIVE
        trunk.forced = self.templates.join_header()
        return [Join(request, trunk, children)]

    def _finish(self, request: Request, reason: str) -> Finish:
        if not request.is_finished:
            request.finish_reason = reason
            request.trunk_path_tokens = request.critical_path_tokens
            # partial branches stay in the output, in order
            request.parts += [(branch, 0, len(branch.tokens)) for branch in request.branches]
            request.branches = []
        return Finish(request, reason)
