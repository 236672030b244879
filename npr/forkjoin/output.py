"""What a request has produced, read off the controller's state (pure Python): the linearised
`Trajectory` at a finish, and, while it runs, the prefix of its linearised response that no later
step can change (what a streaming engine may send). One home for the block-closing rule: branch i+1's
first token is scored by branch i's tail."""

from __future__ import annotations

from npr.forkjoin.state import Request, Seq, SeqState
from npr.forkjoin.trajectory import Trajectory


def build_trajectory(request: Request) -> tuple[Trajectory, tuple[int, ...]]:
    """The finished request's Trajectory and the position of each output token. The output is cut at
    the first token without a log-prob (only when the KV cache ran out before it could be fed)."""
    parts = request.parts + [(request.trunk, request.trunk_cut, len(request.trunk.tokens))]
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
    if cut is not None:
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


def close_block_scores(branches: list[Seq]) -> None:
    """Score each later branch's first token (its forced <step>) from its predecessor's tail."""
    for before, child in zip(branches, branches[1:]):
        child.logprobs[0] = before.tail_score


def final_prefix(request: Request, skip: int = 0) -> tuple[int, list[int], list[float]]:
    """The prefix of a running request's linearised response that no later step can change: the
    finished parts (trunk runs before a fork, joined blocks), then the trunk's own tokens when no block
    is open, or the open block's branches that ended, in order, up to the first that did not (a
    branch's first token scored by its predecessor's tail, as at the join). A token without a log-prob
    ends it. Returns its length, and its ids and log-probs after the first `skip` tokens."""
    ranges = list(request.parts)
    if request.branches:
        for branch in request.branches:
            if branch.state is not SeqState.DONE:
                break
            ranges.append((branch, 0, len(branch.tokens)))
    elif request.trunk is not None:
        ranges.append((request.trunk, request.trunk_cut, len(request.trunk.tokens)))
    length, ids, logprobs, previous = 0, [], [], None
    for seq, start, end in ranges:
        first = start + max(0, skip - length)  # tokens before `skip` were final (and sent) already
        length += min(end - start, max(0, skip - length))
        for k in range(first, end):
            logprob = seq.logprobs[k]
            if k == 0 and logprob is None and previous is not None and not seq.is_trunk and not previous.is_trunk:
                logprob = previous.tail_score
            if logprob is None:
                return length, ids, logprobs
            ids.append(seq.tokens[k])
            logprobs.append(float(logprob))
            length += 1
        previous = seq
    return length, ids, logprobs
