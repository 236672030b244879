"""Human-readable views of a decoded trajectory: the block/branch tree and a JSON-ready summary."""

from __future__ import annotations

from typing import Any


def _runs(result) -> list[tuple[int, int, int, int]]:
    """Contiguous response runs as (block_id, branch_id, start, end) token offsets into the response."""
    layout, start = result.layout, result.layout.response_start
    blocks, branches = layout.block_id.tolist()[start:], layout.branch_id.tolist()[start:]
    runs: list[tuple[int, int, int, int]] = []
    for i, key in enumerate(zip(blocks, branches)):
        if runs and (runs[-1][0], runs[-1][1]) == key and not (key[1] == 0 and runs[-1][1] != 0):
            runs[-1] = (*key, runs[-1][2], i + 1)
        elif runs and key[1] == 0 and runs[-1][1] == 0:
            runs[-1] = (runs[-1][0], 0, runs[-1][2], i + 1)
        else:
            runs.append((*key, i, i + 1))
    return runs


def summarize(result, tokenizer) -> dict[str, Any]:
    """JSON-ready dict: text, stats, finish reason, per-block branches with their text and ends."""
    decode = lambda a, b: tokenizer.decode(result.token_ids[a:b], skip_special_tokens=False)  # noqa: E731
    parts, block_index = [], 0
    for block, branch, a, b in _runs(result):
        if branch == 0:
            parts.append({"kind": "shared", "text": decode(a, b), "num_tokens": b - a})
            continue
        if not parts or parts[-1]["kind"] != "block" or parts[-1]["block_id"] != block:
            ends = result.blocks[block_index] if block_index < len(result.blocks) else []
            parts.append({"kind": "block", "block_id": block, "branches": [], "ends": ends})
            block_index += 1
        parts[-1]["branches"].append({"branch": branch, "text": decode(a, b), "num_tokens": b - a})
    return {
        "text": result.text, "finish_reason": result.finish_reason, "stats": result.stats,
        "is_valid": result.layout.is_valid, "error": result.layout.error, "notes": result.notes,
        "parts": parts, "token_ids": result.token_ids, "logprobs": result.logprobs,
    }


def render_tree(result, tokenizer, width: int = 72) -> str:
    """A readable tree of the shared runs, the blocks and their branches."""
    def clip(text: str) -> str:
        text = text.replace("\n", "\\n")
        return text if len(text) <= width else text[: width - 1] + "…"

    summary = summarize(result, tokenizer)
    lines = [f"prompt: {len(result.prompt_ids)} tokens"]
    for part in summary["parts"]:
        if part["kind"] == "shared":
            lines.append(f"│ {clip(part['text'])}")
            continue
        count = len(part["branches"])
        lines.append(f"├─ block {part['block_id']}: {count} parallel step{'s' if count > 1 else ''}")
        for i, branch in enumerate(part["branches"]):
            end = part["ends"][i] if i < len(part["ends"]) else "open"
            corner = "└" if i == count - 1 else "├"
            lines.append(f"│  {corner}─ step {branch['branch']} [{branch['num_tokens']} tokens, {end}] "
                         f"{clip(branch['text'])}")
    stats = result.stats
    lines.append(f"└─ finish: {result.finish_reason}; total {stats['total_tokens']} tokens, critical path "
                 f"{stats['critical_path_tokens']}, forks {stats['num_forks']}, max width {stats['max_width']}")
    if not result.layout.is_valid:
        lines.append(f"   structure: {result.layout.error}")
    for note in result.notes:
        lines.append(f"   note: {note}")
    return "\n".join(lines)
