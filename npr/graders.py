"""The grader that scores responses for `npr eval`, `npr sample` and `npr generate`, found through the
`npr.graders` entry-point group (the `reward` package registers itself there as "reward"), so the core
never imports it. A grader is any object (a module will do) with
`grade(text, reference, *, extra_info=None) -> bool`, `format_score(text, max_branches) -> (float, list[str])`
and `extract_answer(text) -> answer` with `.text` and `.source` ("boxed" | "phrase" | ...)."""

from __future__ import annotations

import importlib
from typing import Any

from npr.errors import NprError

GROUP = "npr.graders"
DEFAULT_GRADER = "reward"
REQUIRED = ("grade", "format_score", "extract_answer")


class GraderError(NprError, ValueError):
    """A grader name that is not registered, or an object that lacks a grader's functions."""


def registered_graders() -> dict[str, str]:
    """name -> target of every grader in the entry-point group (read from metadata; nothing imported)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load_grader(name: str = DEFAULT_GRADER) -> Any:
    """The grader registered as `name` in `npr.graders`, or `module:attribute` / `module` for one of your
    own. Raises GraderError listing the registered names, or naming the functions the object lacks."""
    from importlib.metadata import entry_points

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            grader = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise GraderError(f"grader {name!r} could not be loaded: {err}") from None
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            names = ", ".join(sorted(registered_graders())) or "none"
            raise GraderError(f"no grader {name!r} in the entry-point group {GROUP!r} (registered: {names}); "
                              "install native-parallel-reasoner (pip install -e .) so `reward` registers, or "
                              "give module:attribute of your own grader")
        grader = found[0].load()
    missing = [f for f in REQUIRED if not callable(getattr(grader, f, None))]
    if missing:
        raise GraderError(f"grader {name!r} lacks {missing}; a grader has {', '.join(REQUIRED)}")
    return grader
