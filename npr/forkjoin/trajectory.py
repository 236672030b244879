"""`Trajectory`: the one record of a fork-join response that crosses engine -> trainer -> eval.

Pure Python and JSON round-trippable. `refused_forks` matters: where an engine declined a valid fork
the response goes on sequentially, and a trainer that does not know it would assign other positions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

STAT_KEYS = ("total_tokens", "critical_path_tokens", "num_forks", "max_width")
FINISH_REASONS = ("stop", "length", "abort")


@dataclass
class Trajectory:
    """prompt_ids + token_ids (the linearised response); logprobs[i] scores token_ids[i] in the
    trainer's convention; refused_forks: absolute token offsets of `</guideline>`s whose fork the
    engine declined; blocks: per forked block, how each branch ended; notes: fallbacks taken."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    stats: dict[str, int]
    refused_forks: list[int] = field(default_factory=list)
    blocks: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"{len(self.logprobs)} log-probs for {len(self.token_ids)} tokens; "
                             "a trajectory needs one log-prob per response token")
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")
        missing = [k for k in STAT_KEYS if k not in self.stats]
        if missing:
            raise ValueError(f"stats lack {missing}; a trajectory's stats hold {list(STAT_KEYS)}")

    @property
    def ids(self) -> list[int]:
        """Prompt and response ids, as the trainer sees them."""
        return list(self.prompt_ids) + list(self.token_ids)

    @property
    def response_start(self) -> int:
        return len(self.prompt_ids)

    def layout(self, tags: Any, max_branches: int | None = None):
        """`npr.layout.build_layout` of prompt+response with this trajectory's refused forks."""
        from npr.layout import build_layout  # torch is needed here only
        from npr.schema import DEFAULT_MAX_BRANCHES

        return build_layout(self.ids, tags, self.response_start, refused_forks=self.refused_forks,
                            max_branches=max_branches or DEFAULT_MAX_BRANCHES)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(Trajectory)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trajectory":
        names = {f.name for f in fields(Trajectory)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown Trajectory fields {sorted(unknown)}; expected {sorted(names)}")
        return cls(**{k: data[k] for k in names if k in data})

    @classmethod
    def from_json(cls, text: str) -> "Trajectory":
        return cls.from_dict(json.loads(text))

    def is_finite(self) -> bool:
        return all(math.isfinite(x) for x in self.logprobs)

