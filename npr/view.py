"""Readable views of a trajectory, in one place. Of an evaluated response (a `samples.jsonl` record, or
any JSON object with a "text"): a terminal tree and a standalone HTML page whose forked blocks show their
branches side by side, built from the text with the schema's text grammar (`npr.text.parse_text`), so no
tokenizer is needed. Of a decoded result (token ids + Layout): the block/branch tree with token counts and
branch ends, and a JSON-ready summary (`render_tree`, `summarize`)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from npr.errors import NprError


class ViewError(NprError, ValueError):
    """A file or record `npr inspect` cannot show; the message names the value and the fix."""


@dataclass
class Part:
    kind: str  # "text" | "block"
    text: str = ""
    plans: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    takeaway: str | None = None
    is_forked: bool = False


def parts_of(text: str) -> list[Part]:
    """The response as shared text runs and blocks, in order (the final answer is the last text run)."""
    from npr.text import parse_text

    parsed = parse_text(text)
    parts: list[Part] = []
    at = 0
    for block in parsed.blocks:
        before = text[at:block.start]
        if before.strip():
            parts.append(Part("text", before.strip()))
        parts.append(Part("block", plans=[p.strip() for p in block.plans], steps=[s.strip() for s in block.steps],
                          takeaway=None if block.takeaway is None else block.takeaway.strip(), is_forked=block.is_forked))
        at = block.end if block.end >= 0 else len(text)
    rest = text[at:]
    if rest.strip():
        parts.append(Part("text", rest.strip()))
    return parts


def load_record(path: str, index: int = 0, select: dict[str, str] | None = None) -> dict[str, Any]:
    """Record `index` of a JSONL file (after filtering by `select`: benchmark, mode, problem_id, sample),
    or the object of a JSON file. Raises ViewError naming the file and what it holds."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except OSError as err:
        raise ViewError(f"{path}: cannot read it ({err.strerror}); give a samples.jsonl of `npr eval` "
                        "or a JSON record with a \"text\"") from None
    try:
        records = [json.loads(raw)] if raw.lstrip().startswith("{") and "\n{" not in raw.strip() else \
            [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ViewError(f"{path}: not JSON or JSONL ({err}); give a samples.jsonl of `npr eval`") from None
    for key, value in (select or {}).items():
        records = [r for r in records if str(r.get(key)) == str(value)]
    if not records:
        raise ViewError(f"{path}: no record matches {select or {}}")
    if not -len(records) <= index < len(records):
        raise ViewError(f"{path}: --index {index} is out of range; {len(records)} matching record(s)")
    record = records[index]
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ViewError(f"{path}: record {index} has no \"text\" (it has {keys}); `npr inspect` shows records "
                        "of `npr eval`'s samples.jsonl")
    return record


def _header(record: dict[str, Any]) -> str:
    bits = [f"{k} {record[k]}" for k in ("benchmark", "problem_id", "sample", "mode") if k in record]
    if "correct" in record:
        bits.append(("correct" if record["correct"] else "wrong") + f" (answer {record.get('answer')!r}, "
                    f"reference {record.get('reference')!r})")
    return " · ".join(bits)


def _stats_line(record: dict[str, Any]) -> str:
    if "total_tokens" not in record:
        return ""
    return (f"{record['total_tokens']} tokens, critical path {record.get('critical_path_tokens')}, "
            f"widths {record.get('widths')}, finish {record.get('finish_reason')}")


def render_terminal(record: dict[str, Any], width: int = 100) -> str:
    """The response as a tree: shared text, each block with its plans, steps (branches) and takeaway."""
    def clip(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = [_header(record) or "response"]
    parts = parts_of(record["text"])
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        lead, cont = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if part.kind == "text":
            lines.append(lead + clip(part.text))
            continue
        count = len(part.steps)
        kind = "parallel steps" if part.is_forked else "steps (not forked)"
        lines.append(f"{lead}block: {len(part.plans)} plans, {count} {kind}")
        for i, plan in enumerate(part.plans, 1):
            lines.append(f"{cont}│  plan {clip(plan)}")
        for i, step in enumerate(part.steps, 1):
            lines.append(f"{cont}{'├' if i < count or part.takeaway is not None else '└'}─ step {clip(step)}")
        if part.takeaway is not None:
            lines.append(f"{cont}└─ takeaway: {clip(part.takeaway)}")
    stats = _stats_line(record)
    if stats:
        lines.append(stats)
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.1em} .meta{color:#555;font-size:.9em;margin-bottom:1em}
pre{white-space:pre-wrap;word-wrap:break-word;margin:0;font-family:ui-monospace,monospace;font-size:.85em}
.text{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.6em 0}
.block{border:2px solid #6a8caf;border-radius:8px;padding:.6em;margin:.8em 0;background:#f0f5fb}
.plans{margin-bottom:.5em} .plan{background:#e3ecf6;border-radius:4px;padding:.3em;margin:.2em 0}
.branches{display:flex;flex-direction:row;gap:.6em;align-items:stretch;overflow-x:auto}
.branch{flex:1 1 0;min-width:12em;background:#fff;border:1px solid #9ab;border-radius:6px;padding:.5em}
.branch h3,.takeaway h3,.plans h3{font-size:.85em;margin:0 0 .3em 0;color:#345}
.takeaway{background:#eef7ee;border:1px solid #8b8;border-radius:6px;padding:.5em;margin-top:.6em}
"""

_SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var blocks = document.querySelectorAll('.block'), ok = true, total = 0;
  blocks.forEach(function (b) {
    var rs = Array.prototype.map.call(b.querySelectorAll(':scope > .branches > .branch'),
                                      function (e) { return e.getBoundingClientRect(); });
    total += rs.length;
    for (var i = 1; i < rs.length; i++) {
      if (Math.abs(rs[i].top - rs[0].top) > 1 || rs[i].left <= rs[i - 1].left || rs[i].width <= 0) ok = false;
    }
  });
  document.body.setAttribute('data-rendered-branches', String(total));
  document.body.setAttribute('data-side-by-side', String(ok));
});
"""


def render_html(record: dict[str, Any]) -> str:
    """A standalone HTML page (inline CSS, no network): shared text, and per block its plans, its
    branches side by side (one column each) and its takeaway. Once laid out, a small script records
    on <body> how many branches rendered and whether each block's branches sit in one row."""
    esc = html.escape
    body = [f"<h1>{esc(_header(record) or 'response')}</h1>", f"<div class='meta'>{esc(_stats_line(record))}</div>"]
    num_blocks = 0
    for part in parts_of(record["text"]):
        if part.kind == "text":
            body.append(f"<div class='text'><pre>{esc(part.text)}</pre></div>")
            continue
        num_blocks += 1
        b = num_blocks
        plans = "".join(f"<div class='plan'><pre>{esc(p)}</pre></div>" for p in part.plans)
        steps = "".join(f"<div class='branch' id='block-{b}-step-{i}'><h3>step {i}</h3><pre>{esc(s)}</pre></div>"
                        for i, s in enumerate(part.steps, 1))
        take = "" if part.takeaway is None else \
            f"<div class='takeaway'><h3>takeaway</h3><pre>{esc(part.takeaway)}</pre></div>"
        body.append(f"<div class='block' id='block-{b}' data-width='{len(part.steps)}'>"
                    f"<div class='plans'><h3>block {b}: {len(part.plans)} plans</h3>{plans}</div>"
                    f"<div class='branches'>{steps}</div>{take}</div>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>NPR trajectory</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>" + "\n".join(body) + "</body></html>")


# -- a decoded result (token level: the Layout's blocks and branches) ----------------------------------
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
