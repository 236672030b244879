"""Layout: per-token block / branch / position of a linearised sequence (DESIGN §3-4), as tensors.
The canonical-id builders (`Templates`) live in the torch-free `npr.templates` and are re-exported here.

Invariant: every branch of a block starts at position g+1 (g = last shared token before its first
<step>), and the token after the branches sits at g + max_i L_i + 1. `build_layout` is total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import torch

from npr.schema import DEFAULT_MAX_BRANCHES, Event, Issue, Phase, TagIds, Tracker
from npr.templates import Templates, make_encode, render_block_text  # noqa: F401  (re-exported)


@dataclass(frozen=True, eq=False)
class Layout:
    """Structure of one prompt+response sequence. Tensors are LongTensor [L] on CPU."""

    token_ids: torch.Tensor
    position_ids: torch.Tensor
    block_id: torch.Tensor
    branch_id: torch.Tensor
    response_start: int
    issues: tuple[Issue, ...] = ()
    num_forks: int = 0

    @property
    def is_valid(self) -> bool:
        return not self.issues

    @property
    def error(self) -> str | None:
        """The first problem as 'reason at token offset k: detail', or None when valid."""
        if not self.issues:
            return None
        first = self.issues[0]
        return f"{first.name} at token offset {first.offset}: {first.detail}"

    def __len__(self) -> int:
        return int(self.token_ids.numel())

    @property
    def seq_id(self) -> torch.Tensor:
        return torch.zeros_like(self.token_ids)

    def branch_spans(self) -> list[list[tuple[int, int]]]:
        """For each forked block in order, the [start, end) token spans of its branches."""
        spans: dict[int, dict[int, list[int]]] = {}
        for idx, (blk, br) in enumerate(zip(self.block_id.tolist(), self.branch_id.tolist())):
            if br:
                spans.setdefault(blk, {}).setdefault(br, []).append(idx)
        return [[(v[0], v[-1] + 1) for _, v in sorted(b.items())] for _, b in sorted(spans.items())]


def build_layout(
    token_ids: Sequence[int] | torch.Tensor,
    tags: TagIds,
    response_start: int = 0,
    *,
    max_branches: int = DEFAULT_MAX_BRANCHES,
    refused_forks: Collection[int] = (),
) -> Layout:
    """Parse prompt+response ids into a Layout. Never raises on bad structure (it is flagged instead).

    token_ids: ints or LongTensor [L]; parsing starts at `response_start` (the prompt is shared).
    refused_forks: token offsets of `</guideline>` tokens at which an engine declined a valid fork
    (budget); the parse then goes on sequentially there, as the engine did.
    Raises TypeError/ValueError only for arguments of the wrong kind (not for bad structure).
    """
    ids = _as_id_list(token_ids)
    if not isinstance(tags, TagIds):
        raise TypeError(f"tags must be npr.schema.TagIds, got {type(tags).__name__}; use TagIds.from_tokenizer(tok)")
    if not isinstance(response_start, int) or not 0 <= response_start <= len(ids):
        raise ValueError(f"response_start must be an int in [0, {len(ids)}], got {response_start!r}")
    length = len(ids)
    pos = [0] * length
    blk = [0] * length
    br = [0] * length
    for i in range(response_start):
        pos[i] = i
    tracker = Tracker(tags, max_branches)
    tracker.offset = response_start - 1  # issue offsets are absolute token indices
    refused = set(refused_forks)
    cursor = response_start - 1  # position of the last shared token
    fork_base = None  # g: position of the last shared token before the region's first <step>
    branch_len = max_len = num_forks = 0
    for i in range(response_start, length):
        event = tracker.feed(ids[i])
        if event is Event.FORK:
            if i in refused:
                tracker.refuse_fork("engine declined the fork: too little budget left")
            else:
                num_forks += 1
        elif event is Event.BRANCH_START:
            if fork_base is None:
                fork_base = cursor
            branch_len = 0
        blk[i] = tracker.block_id
        in_branch = tracker.phase in (Phase.STEP, Phase.REGION) and tracker.branch_id > 0
        if in_branch:
            branch_len += 1
            max_len = max(max_len, branch_len)
            br[i] = tracker.branch_id
            pos[i] = fork_base + branch_len
            continue
        if event is Event.JOIN and fork_base is not None:
            cursor = fork_base + max_len
        cursor += 1
        pos[i] = cursor
        if event is Event.JOIN:
            fork_base, max_len = None, 0
    issues = tuple(tracker.finish())
    return Layout(
        token_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(pos, dtype=torch.long),
        block_id=torch.tensor(blk, dtype=torch.long),
        branch_id=torch.tensor(br, dtype=torch.long),
        response_start=response_start,
        issues=issues,
        num_forks=num_forks,
    )


def _as_id_list(token_ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 1 or token_ids.dtype.is_floating_point:
            raise TypeError(f"token_ids must be a 1-D integer tensor, got shape {tuple(token_ids.shape)} {token_ids.dtype}")
        return token_ids.tolist()
    try:
        out = [int(t) for t in token_ids]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"token_ids must be a sequence of ints, got {type(token_ids).__name__}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Packed batches


@dataclass(frozen=True, eq=False)
class PackedLayout:
    """Several layouts concatenated on one axis (no padding); positions restart per sequence."""

    token_ids: torch.Tensor
    position_ids: torch.Tensor
    block_id: torch.Tensor
    branch_id: torch.Tensor
    seq_id: torch.Tensor
    cu_seqlens: torch.Tensor  # [num_seqs + 1] int32 offsets, flash-attn style

    def __len__(self) -> int:
        return int(self.token_ids.numel())


def pack_layouts(layouts: Sequence[Layout]) -> PackedLayout:
    """Concatenate layouts into one packed sequence with a per-token `seq_id`."""
    if not layouts:
        raise ValueError("pack_layouts needs at least one Layout, got an empty list")
    lengths = [len(layout) for layout in layouts]
    seq_id = torch.repeat_interleave(torch.arange(len(layouts)), torch.tensor(lengths))
    cu = torch.zeros(len(layouts) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    cat = lambda name: torch.cat([getattr(layout, name) for layout in layouts])  # noqa: E731
    return PackedLayout(cat("token_ids"), cat("position_ids"), cat("block_id"), cat("branch_id"), seq_id, cu)
