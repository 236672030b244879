"""The parallel schema: the eight tags, their token ids, one grammar (`Tracker`) shared by the
token-level layout, the engines and the text-level parser (`npr.text`). Token ids are the truth; text is for people.

Glossary of index words used everywhere in this package:
  q_idx, kv_idx   index of a query / key token in a linearised sequence
  block_id        1-based index of the parallel block a token belongs to (0 before the first block)
  branch_id       1-based branch (step) within its block; 0 = shared (seen by every later token)
  seq_id          index of a sequence inside a packed batch
  response_start  index of the first response token; parsing starts there (prompts may quote tags)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from npr.errors import NprError, SchemaError, TagTokenError  # noqa: F401  (re-exported)

TAGS: dict[str, str] = {
    "guideline_open": "<guideline>",
    "guideline_close": "</guideline>",
    "plan_open": "<plan>",
    "plan_close": "</plan>",
    "step_open": "<step>",
    "step_close": "</step>",
    "takeaway_open": "<takeaway>",
    "takeaway_close": "</takeaway>",
}
TAG_STRINGS: tuple[str, ...] = tuple(TAGS.values())
DEFAULT_MAX_BRANCHES = 5


@dataclass(frozen=True)
class TagIds:
    """Token ids of the eight tags for one tokenizer."""

    guideline_open: int
    guideline_close: int
    plan_open: int
    plan_close: int
    step_open: int
    step_close: int
    takeaway_open: int
    takeaway_close: int

    def __post_init__(self):
        values = [getattr(self, f.name) for f in fields(self)]
        for f, v in zip(fields(self), values):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"TagIds.{f.name} must be an int token id, got {v!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"TagIds must be 8 distinct token ids, got {dict(self.as_dict())}")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "TagIds":
        """Look the tags up in a HF tokenizer. Raises TagTokenError naming each tag that is not one token."""
        ids: dict[str, int] = {}
        problems = []
        for name, tag in TAGS.items():
            encoded = list(tokenizer.encode(tag, add_special_tokens=False))
            if len(encoded) == 1:
                ids[name] = int(encoded[0])
            else:
                problems.append(f"{tag!r} -> {encoded}")
        if problems:
            raise TagTokenError(
                "tags must each be one token for fork-join decoding and the structured mask, but "
                + ", ".join(problems)
                + ". Prepare the model first: `npr prepare-model --base MODEL --out DIR` adds them as special "
                "tokens, resizes the embeddings and saves both (npr.prepare.prepare_tokenizer_and_model in Python)."
            )
        return cls(**ids)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def all(self) -> frozenset[int]:
        return frozenset(self.as_dict().values())

    @property
    def by_text(self) -> dict[str, int]:
        """Tag string -> id: the one map from text to ids ("<step>" -> step_open's id, ...)."""
        return {TAGS[name]: value for name, value in self.as_dict().items()}

    def name_of(self, token_id: int) -> str | None:
        for name, value in self.as_dict().items():
            if value == token_id:
                return name
        return None


class Phase(enum.Enum):
    OUTSIDE = "outside"  # shared text: before, between and after blocks
    GUIDELINE = "guideline"  # inside <guideline> ... </guideline>, counting plans
    REGION = "region"  # after a forked </guideline>, not inside an open step, before <takeaway>
    STEP = "step"  # inside branch i's <step>, before its </step>
    TAKEAWAY = "takeaway"  # after the join's <takeaway>, before </takeaway>


class Event(enum.Enum):
    NONE = "none"
    FORK = "fork"  # this token (</guideline>) closed a guideline with a valid number of plans
    NO_FORK = "no_fork"  # this </guideline> does not fork (plan count out of range); the request stays sequential
    BRANCH_START = "branch_start"  # this <step> opened a new branch
    STEP_END = "step_end"  # this </step> closed the open branch
    JOIN = "join"  # this <takeaway> ended the branch region


@dataclass(frozen=True)
class Issue:
    """One grammar violation: a stable `name`, the item `offset` (token index, or character offset for text)."""

    name: str
    offset: int
    detail: str

    def __str__(self) -> str:
        return f"{self.name} at offset {self.offset}: {self.detail}"


ISSUE_NAMES = (
    "stray_tag",  # a tag where the grammar does not allow it (it is kept as plain content)
    "nested_guideline",  # <guideline> inside a guideline, a step or a branch region
    "plan_count",  # a guideline with 0 plans or more than max_branches: no fork
    "fork_refused",  # the engine refused a valid fork (budget): the request went on sequentially
    "unclosed_plan",
    "unclosed_step",  # a branch ended without its </step>
    "step_count",  # number of steps in a block differs from its number of plans
    "unclosed_block",  # the sequence ended inside a guideline or a branch region
    "unclosed_takeaway",
)


@dataclass
class Tracker:
    """Incremental parser of the schema over token ids (the engines feed one token at a time).

    `feed(token)` returns an `Event` and leaves `block_id`/`branch_id` set to the token's own
    assignment. The grammar (DESIGN §3): a block forks at a `</guideline>` with 1..max_branches plans;
    in the branch region each `<step>` outside an open step starts the next branch, separators after a
    `</step>` belong to that branch, and `<takeaway>` ends the region. Inside an open step every tag
    but `</step>` is content (an open step ended by `<step>`/`<takeaway>` is flagged `unclosed_step`).
    Never raises on any input.
    """

    tags: TagIds
    max_branches: int = DEFAULT_MAX_BRANCHES
    phase: Phase = Phase.OUTSIDE
    block_id: int = 0
    branch_id: int = 0
    num_plans: int = 0
    num_branches: int = 0
    is_plan_open: bool = False
    offset: int = -1  # offset of the last token fed
    issues: list[Issue] = field(default_factory=list)
    guideline_offset: int = -1

    def __post_init__(self):
        if not isinstance(self.max_branches, int) or self.max_branches < 1:
            raise ValueError(f"max_branches must be an int >= 1, got {self.max_branches!r}")

    def _flag(self, name: str, detail: str, offset: int | None = None) -> None:
        self.issues.append(Issue(name, self.offset if offset is None else offset, detail))

    def feed(self, token: int) -> Event:
        self.offset += 1
        t = self.tags
        phase = self.phase
        if phase is Phase.OUTSIDE:
            if token == t.guideline_open:
                return self._open_guideline()
            if token in t.all:
                self._flag("stray_tag", f"{self._name(token)} outside a block")
            return Event.NONE
        if phase is Phase.GUIDELINE:
            if token == t.plan_open:
                if self.is_plan_open:
                    self._flag("unclosed_plan", f"plan {self.num_plans} not closed before the next <plan>")
                self.num_plans += 1
                self.is_plan_open = True
            elif token == t.plan_close:
                if not self.is_plan_open:
                    self._flag("stray_tag", "</plan> without an open <plan>")
                self.is_plan_open = False
            elif token == t.guideline_close:
                return self._close_guideline()
            elif token == t.guideline_open:
                self._flag("nested_guideline", "<guideline> inside a guideline")
            elif token in t.all:
                self._flag("stray_tag", f"{self._name(token)} inside a guideline")
            return Event.NONE
        if phase is Phase.REGION:
            if token == t.step_open:
                return self._open_branch()
            if token == t.takeaway_open:
                return self._join()
            if token == t.guideline_open:
                self._flag("nested_guideline", "<guideline> inside a branch region")
            elif token in t.all:
                self._flag("stray_tag", f"{self._name(token)} between steps")
            return Event.NONE
        if phase is Phase.STEP:
            if token == t.step_close:
                self.phase = Phase.REGION
                return Event.STEP_END
            if token == t.step_open or token == t.takeaway_open:
                self._flag("unclosed_step", f"step {self.branch_id} ended by {self._name(token)} without </step>")
                return self._open_branch() if token == t.step_open else self._join()
            if token == t.guideline_open:
                self._flag("nested_guideline", f"<guideline> inside step {self.branch_id}; no nested fork")
            return Event.NONE
        # Phase.TAKEAWAY
        if token == t.takeaway_close:
            self.phase = Phase.OUTSIDE
        elif token == t.guideline_open:
            self._flag("unclosed_takeaway", "<guideline> before the takeaway was closed")
            return self._open_guideline()
        elif token in t.all:
            self._flag("stray_tag", f"{self._name(token)} inside a takeaway")
        return Event.NONE

    def refuse_fork(self, reason: str) -> None:
        """Called by an engine right after a FORK event it will not carry out: go on sequentially."""
        if self.phase is not Phase.REGION or self.num_branches:
            raise RuntimeError("refuse_fork() must follow a FORK event directly")
        self._flag("fork_refused", reason)
        self.phase = Phase.OUTSIDE

    def finish(self) -> list[Issue]:
        """Close the parse at the end of the sequence; returns all issues found."""
        end = self.offset + 1
        if self.phase in (Phase.GUIDELINE, Phase.REGION, Phase.STEP):
            where = {Phase.GUIDELINE: "inside the guideline", Phase.REGION: "before <takeaway>",
                     Phase.STEP: f"inside step {self.branch_id}"}[self.phase]
            self._flag("unclosed_block", f"block {self.block_id} left open at the end, {where}", end)
        elif self.phase is Phase.TAKEAWAY:
            self._flag("unclosed_takeaway", f"takeaway of block {self.block_id} not closed at the end", end)
        return list(self.issues)

    # -- transitions -------------------------------------------------------------------------
    def _open_guideline(self) -> Event:
        self.block_id += 1
        self.branch_id = 0
        self.num_plans = 0
        self.num_branches = 0
        self.is_plan_open = False
        self.guideline_offset = self.offset
        self.phase = Phase.GUIDELINE
        return Event.NONE

    def _close_guideline(self) -> Event:
        if self.is_plan_open:
            self._flag("unclosed_plan", f"plan {self.num_plans} not closed before </guideline>")
            self.is_plan_open = False
        if 1 <= self.num_plans <= self.max_branches:
            self.phase = Phase.REGION
            return Event.FORK
        self._flag("plan_count", f"guideline has {self.num_plans} plans, expected 1..{self.max_branches}; no fork")
        self.phase = Phase.OUTSIDE
        return Event.NO_FORK

    def _open_branch(self) -> Event:
        self.num_branches += 1
        self.branch_id = self.num_branches
        self.phase = Phase.STEP
        return Event.BRANCH_START

    def _join(self) -> Event:
        if self.num_branches != self.num_plans:
            self._flag("step_count", f"block {self.block_id} has {self.num_branches} steps for {self.num_plans} plans")
        self.branch_id = 0
        self.phase = Phase.TAKEAWAY
        return Event.JOIN

    def _name(self, token: int) -> str:
        name = self.tags.name_of(token)
        return TAGS[name] if name else str(token)
