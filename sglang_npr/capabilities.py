"""What this build of the SGLang plugin can do: reported in server info and checked at request intake,
so a feature that is not there is refused with a clear message, never silently wrong."""

from __future__ import annotations

from importlib import metadata
from typing import Any

PROTOCOL = "custom_params.npr/1"

# Fork-join inside the scheduler (DESIGN §5) is not wired yet; until it is, NPR requests are refused.
MISSING: tuple[str, ...] = ("scheduler fork-join integration (driving npr.forkjoin) is not implemented yet",)


def capabilities() -> dict[str, Any]:
    try:
        version = metadata.version("native-parallel-reasoner")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        version = None
    return {"plugin": "sglang_npr", "version": version, "protocol": PROTOCOL,
            "fork_join": not MISSING, "missing": list(MISSING)}
