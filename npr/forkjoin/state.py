"""The nouns of the fork-join protocol (pure Python): a request, its sequences (trunk and branches), the
`Work` an engine does for one sequence in one step with its `WorkResult`, and the events a step ends in.
The controller (npr.forkjoin.controller) is the only writer of this state; engines read it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from npr.forkjoin.limits import Limits
from npr.schema import Tracker

if TYPE_CHECKING:
    from npr.forkjoin.trajectory import Trajectory


class SeqState(enum.Enum):
    ACTIVE = "active"  # feeds its pending tokens (up to the feed limit) every step, then samples one
    PARKED = "parked"  # a trunk waiting for its branches
    DONE = "done"


class BranchEnd(enum.Enum):
    CLOSED = "closed"  # wrote </step>
    STRAY = "stray"  # wrote <step> or <takeaway> inside its step: token dropped, branch ends unclosed
    STOP = "stop"  # wrote EOS / a stop token inside its step
    LENGTH = "length"  # ran out of budget


TAIL = -1  # a score target: the sequence's tail score (its linear successor's first token)


@dataclass(frozen=True)
class Prefilled:
    """A prompt the engine has already run (SGLang's own extend, with its radix cache): the KV slots of
    its tokens (the engine's, never freed by the controller; placeholders are fine for an engine that
    keeps slot ids on its device) and the first response token the engine chose from the prompt's last
    logits, with the log-softmax of those raw logits at it."""

    slots: Sequence[Any]
    token: int
    logprob: float


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
    context: list[Any] = field(default_factory=list)  # slots it attends to: shared prefix, then its own
    own: list[Any] = field(default_factory=list)  # slots it owns
    header_len: int = 0  # forced tokens that open a branch (<step> + "\n{i}:"); 0 for the trunk
    state: SeqState = SeqState.ACTIVE
    end: BranchEnd | None = None
    drain: bool = False  # feed the pending tokens, then end without sampling
    tail_score: float | None = None  # log-prob of its linear successor's first token (last fed row)
    engine: Any = None  # the engine's own per-sequence state (RNG, row, ...)

    @property
    def is_trunk(self) -> bool:
        return self.branch == 0

    @property
    def num_prompt_pending(self) -> int:
        """Prompt tokens at the head of `pending` (a fresh, not prefilled trunk)."""
        return len(self.pending) - (len(self.tokens) - self.num_fed)


@dataclass(eq=False)
class Request:
    """Controller state of one request."""

    req_id: Any
    prompt_ids: list[int]
    limits: Limits
    stop_token_ids: frozenset[int]
    prefilled: Prefilled | None = None
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
    started: bool = False  # a prefilled request's first token was emitted
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
    """What the engine does for one sequence in one step (see npr.forkjoin.controller)."""

    seq: Seq
    tokens: list[int]
    positions: list[int]
    context: list[Any]  # slots every token of this work attends to (the seq's own list: read it before
    #                     the commit); token j also sees slots[:j+1]
    scores: list[tuple[int, int]]  # (row j of this work, token id): log_softmax(raw logits[j])[token]
    sample: bool  # then choose one token from the last row's logits
    slots: list[Any] = field(default_factory=list)  # where each token's K/V is written
    targets: list[int] = field(default_factory=list)  # per score: index into seq.logprobs, or TAIL
    num_prompt: int = 0  # prompt tokens among `tokens` (they come first)


@dataclass
class WorkResult:
    """The engine's report for one Work: the requested scores in order, and the sampled token with
    the log-softmax of the raw logits (temperature 1, no processors) at it."""

    scores: Sequence[float] = ()
    token: int | None = None
    logprob: float | None = None

    @staticmethod
    def for_works(works: Sequence["Work"], scores: Sequence[float], tokens: Sequence[int],
                  logprobs: Sequence[float]) -> list["WorkResult"]:
        """One result per work from an engine's flat step results: `scores` in work order (each work's
        requested scores), `tokens` / `logprobs` one per sampling work, in work order."""
        results, at, sampled = [], 0, 0
        for work in works:
            values = list(scores[at:at + len(work.scores)])
            at += len(work.scores)
            if work.sample:
                results.append(WorkResult(values, int(tokens[sampled]), float(logprobs[sampled])))
                sampled += 1
            else:
                results.append(WorkResult(values))
        return results


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
    trajectory: "Trajectory"
    positions: tuple[int, ...]  # the position assigned to each output token


EngineEvent = Fork | Join | Preempt | Finish


@dataclass
class Plan:
    works: list[Work]
    events: list[EngineEvent]
