"""Wire protocol of NPR requests (DESIGN §8): `sampling_params["custom_params"]["npr"]`, parsed and
validated once at request intake into a frozen `NprParams`; and the answer's `meta_info["npr"]` record,
built (`make_npr_record`) and parsed (`parse_npr_record`) here only. Pure Python (no torch, no SGLang).

Wire form: the "npr" dict holds scalars only, and the `script` (branch lengths per block) travels as
compact JSON text, e.g. "[[3,5],[4,4,6]]" (`encode_npr_params` builds it from lists). Reason: with
SGLANG_USE_PICKLE_IPC=0, SGLang 0.5.23 decodes custom_params in the scheduler against
`Dict[str, scalar | list[scalar] | dict[str, scalar]]`, so a list of lists inside "npr" would not
decode there; the default pickle IPC would carry it, but the protocol must work with both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from npr.errors import NprError
from npr.forkjoin.limits import LimitFields
from npr.forkjoin.trajectory import FINISH_REASONS, STAT_KEYS, Trajectory

NPR_KEY = "npr"  # the key inside sampling_params["custom_params"], and inside an answer's meta_info


class NprParamsError(NprError, ValueError):
    """`custom_params["npr"]` of a request is malformed; the message names the value and the fix."""


@dataclass(frozen=True)
class NprParams(LimitFields):
    """Per-request fork-join limits (DESIGN §5, `npr.forkjoin.limits.LimitFields`) and an optional forced structure.

    max_new_tokens bounds the critical path (None: the request's own sampling_params.max_new_tokens);
    max_total_tokens bounds all generated tokens (None: max_branches * max_new_tokens); a fork is
    refused when fewer than min_fork_budget tokens per branch are left. `script` forces, on any model,
    one block per inner tuple (that many plans/branches, each branch's content that many tokens),
    exactly like npr.decoding.ScriptedStructure; plan_tokens/takeaway_tokens/answer_tokens size the
    forced trunk of a script. return_positions adds the DESIGN §4 position of every output token to
    meta_info["npr"] (for checks; a trainer derives them from the layout).
    """

    max_new_tokens: int | None = None  # resolved per request (see `resolved`)
    script: tuple[tuple[int, ...], ...] | None = None
    plan_tokens: int = 2
    takeaway_tokens: int = 2
    answer_tokens: int = 3
    return_positions: bool = False  # meta_info["npr"]["positions"]: the position of each output token

    def __post_init__(self):
        self.check_limits(_check_int)
        for name in ("plan_tokens", "takeaway_tokens", "answer_tokens"):
            _check_int(name, getattr(self, name), 0)
        if not isinstance(self.return_positions, bool):
            raise NprParamsError(f"custom_params['npr']['return_positions'] must be true or false, "
                                 f"got {self.return_positions!r}")
        if self.script is not None:
            object.__setattr__(self, "script", _check_script(self.script, self.max_branches))

    def resolved(self, request_max_new_tokens: int | None) -> "NprParams":
        """A copy whose max_new_tokens / max_total_tokens are concrete (request default, then budget rule)."""
        path = self.max_new_tokens if self.max_new_tokens is not None else request_max_new_tokens
        if path is None:
            raise NprParamsError("an NPR request needs max_new_tokens: set custom_params['npr']['max_new_tokens'] "
                                 "or sampling_params['max_new_tokens']")
        total = self.max_total_tokens if self.max_total_tokens is not None else self.max_branches * path
        return NprParams(**{**self.as_dict(), "max_new_tokens": path, "max_total_tokens": total, "script": self.script})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = tuple(f.name for f in fields(NprParams))


def parse_npr_params(custom_params: Mapping[str, Any] | None) -> NprParams | None:
    """`NprParams` from a request's custom_params, or None when it carries no "npr" key.

    Raises NprParamsError (a ValueError) naming the offending key or value, the expected form and the fix
    (custom_params that is not a dict, or an "npr" value that is not a dict, null included).
    """
    if custom_params is None:
        return None
    if not isinstance(custom_params, Mapping):
        raise NprParamsError(f"sampling_params['custom_params'] must be a JSON object (a dict, e.g. "
                             f"{{\"npr\": {{\"max_branches\": 4}}}}) or left out, got {_json_type(custom_params)} "
                             f"{_short(custom_params)}")
    if NPR_KEY not in custom_params:
        return None
    raw = custom_params[NPR_KEY]
    if not isinstance(raw, Mapping):
        raise NprParamsError(f"custom_params['npr'] must be a JSON object of limits (a dict, e.g. "
                             f"{{\"max_branches\": 4}}; {{}} for the defaults), got {_json_type(raw)} {_short(raw)}; "
                             "leave the 'npr' key out for a plain request")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise NprParamsError(f"unknown key(s) {unknown} in custom_params['npr']; valid keys: {list(FIELDS)}")
    values = dict(raw)
    if "script" in values and values["script"] is not None:
        values["script"] = _decode_script(values["script"])
    try:
        return NprParams(**values)
    except NprParamsError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - __post_init__ raises NprParamsError itself
        raise NprParamsError(f"custom_params['npr'] is invalid: {exc}") from exc


def encode_npr_params(max_branches: int | None = None, max_new_tokens: int | None = None,
                      max_total_tokens: int | None = None, min_fork_budget: int | None = None,
                      script: Sequence[Sequence[int]] | None = None, **extra: int) -> dict[str, Any]:
    """The wire dict for `custom_params["npr"]` (validated; the script as JSON text). None = default."""
    values = {"max_branches": max_branches, "max_new_tokens": max_new_tokens, "max_total_tokens": max_total_tokens,
              "min_fork_budget": min_fork_budget, **extra}
    wire = {k: v for k, v in values.items() if v is not None}
    if script is not None:
        wire["script"] = json.dumps([[int(x) for x in block] for block in script], separators=(",", ":"))
    parse_npr_params({NPR_KEY: wire})  # fail here, in the client, not in the server
    return wire


class NprRecordError(NprError, ValueError):
    """An answer's `meta_info["npr"]` record is malformed (not from this plugin, or another version)."""


@dataclass(frozen=True)
class NprRecord:
    """`meta_info["npr"]` of a finished NPR request (DESIGN §8): the stats {total_tokens,
    critical_path_tokens, num_forks, max_width}, how each forked block's branches ended, the absolute
    offsets of refused forks, the fallbacks taken, the finish reason, and (when the request asked for
    return_positions) the DESIGN §4 position of every output token."""

    stats: dict[str, int]
    refused_forks: tuple[int, ...] = ()
    blocks: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = ()
    finish_reason: str | None = None
    positions: tuple[int, ...] | None = None

    @classmethod
    def of(cls, trajectory: Trajectory, positions: Sequence[int] | None = None) -> "NprRecord":
        return cls(stats={k: int(trajectory.stats[k]) for k in STAT_KEYS},
                   refused_forks=tuple(int(x) for x in trajectory.refused_forks),
                   blocks=tuple(tuple(str(e) for e in block) for block in trajectory.blocks),
                   notes=tuple(str(n) for n in trajectory.notes), finish_reason=trajectory.finish_reason,
                   positions=None if positions is None else tuple(int(x) for x in positions))

    def as_dict(self) -> dict[str, Any]:
        """The wire form: plain dicts, lists and scalars ("positions" only when present)."""
        out = {"stats": dict(self.stats), "blocks": [list(b) for b in self.blocks],
               "refused_forks": list(self.refused_forks), "notes": list(self.notes),
               "finish_reason": self.finish_reason}
        if self.positions is not None:
            out["positions"] = list(self.positions)
        return out


def make_npr_record(trajectory: Trajectory, positions: Sequence[int] | None = None) -> dict[str, Any]:
    """The `meta_info["npr"]` dict an engine sends with a finished request's `Trajectory`."""
    return NprRecord.of(trajectory, positions).as_dict()


def parse_npr_record(record: Any) -> NprRecord | None:
    """The `NprRecord` of a `meta_info["npr"]` value (or of a dict that extends it, e.g. verl's
    extra_fields["npr"]); None when there is none (a plain, sequential request). Raises NprRecordError
    naming what is missing when it is not a record of this plugin."""
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise NprRecordError(f"meta_info['npr'] must be a dict, got {type(record).__name__} {record!r}: the "
                             "server does not run this NPR plugin (or another version of it)")
    missing = [k for k in ("stats", "refused_forks") if k not in record]
    stats = record.get("stats")
    if not missing and isinstance(stats, Mapping):
        missing = [f"stats.{k}" for k in STAT_KEYS if k not in stats]
    elif not missing:
        missing = ["stats (a dict)"]
    if missing:
        raise NprRecordError(f"meta_info['npr'] lacks {missing} (got {dict(record)!r}): the server does not run "
                             "this NPR plugin's fork-join (or another version of it)")
    positions = record.get("positions")
    return NprRecord(stats={k: int(stats[k]) for k in STAT_KEYS},
                     refused_forks=tuple(int(x) for x in record["refused_forks"]),
                     blocks=tuple(tuple(block) for block in record.get("blocks") or ()),
                     notes=tuple(record.get("notes") or ()), finish_reason=record.get("finish_reason"),
                     positions=None if positions is None else tuple(int(x) for x in positions))


def trajectory_from_output(prompt: Sequence[int], out: Mapping[str, Any]) -> Trajectory:
    """A `Trajectory` from one SGLang answer (`sglang.Engine` or native /generate): output_ids,
    meta_info["output_token_logprobs"] (return_logprob=True) and meta_info["npr"] (absent for a plain,
    sequential request: the stats of a sequence that never forked). Raises NprRecordError when the
    log-probs do not cover the ids or the record is malformed."""
    meta = out.get("meta_info") or {}
    ids = list(out["output_ids"])
    logprobs = [float(entry[0]) for entry in meta.get("output_token_logprobs") or []]
    if len(logprobs) != len(ids):
        raise NprRecordError(f"SGLang returned {len(logprobs)} log-probs for {len(ids)} output ids; "
                             "the request needs return_logprob=True")
    finish = meta.get("finish_reason") or {}
    reason = finish.get("type", "stop") if isinstance(finish, Mapping) else str(finish)
    reason = reason if reason in FINISH_REASONS else "stop"
    record = parse_npr_record(meta.get(NPR_KEY))
    if record is None:
        stats = {"total_tokens": len(ids), "critical_path_tokens": len(ids), "num_forks": 0, "max_width": 1}
        return Trajectory(list(prompt), ids, logprobs, reason, stats)
    return Trajectory(list(prompt), ids, logprobs, reason, dict(record.stats), refused_forks=list(record.refused_forks),
                      blocks=[list(b) for b in record.blocks], notes=list(record.notes))


def _decode_script(value: Any) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise NprParamsError(f"custom_params['npr']['script'] must be JSON text of branch lengths per block, "
                                 f"e.g. '[[3,5],[4,4,6]]'; got {value!r} ({exc.msg})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(b, (list, tuple)) for b in value):
        raise NprParamsError(f"custom_params['npr']['script'] must be a list of blocks, each a list of branch "
                             f"lengths, e.g. '[[3,5],[4,4,6]]'; got {value!r}")
    return tuple(tuple(block) for block in value)


def _check_script(script, max_branches: int) -> tuple[tuple[int, ...], ...]:
    blocks = _decode_script(script) if not isinstance(script, tuple) else script
    if not blocks:
        raise NprParamsError("custom_params['npr']['script'] has no block; give at least one, e.g. '[[3,5]]', "
                             "or leave 'script' out")
    for index, block in enumerate(blocks):
        if not 1 <= len(block) <= max_branches:
            raise NprParamsError(f"script block {index} has {len(block)} branches {list(block)}; each block needs "
                                 f"1..max_branches={max_branches} branch lengths (raise max_branches or shorten it)")
        for length in block:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise NprParamsError(f"script block {index} has branch length {length!r}; lengths are ints >= 0")
    return tuple(tuple(int(x) for x in block) for block in blocks)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise NprParamsError(f"custom_params['npr']['{name}'] must be an int >= {minimum}, got {value!r}")


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (what the client sent), e.g. "string" for a str."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
