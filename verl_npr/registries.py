"""Claiming our names in verl's registries: one rule (a name another plugin holds is refused; a name that
holds our own entry already is left as it is) under one lock, for every `register_*` of the plugin."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

REGISTRY_LOCK = threading.RLock()  # every write of ours to a verl registry holds it


@dataclass(frozen=True)
class Claim:
    """`name` in one registry: `holder()` is what the registry holds under it now (None = free),
    `is_ours(holder)` whether that is our own entry, `register()` writes ours."""

    kind: str  # what verl calls the registry's entries, e.g. "advantage estimator"
    name: str
    holder: Callable[[], Any]
    is_ours: Callable[[Any], bool]
    register: Callable[[], Any]

    @classmethod
    def of(cls, kind: str, name: str, registry: Any, ours: Any, register: Callable[[], Any],
           is_ours: Callable[[Any], bool] | None = None) -> "Claim":
        """A claim in a dict-like `registry`; our entry is `ours` itself unless `is_ours` says otherwise."""
        return cls(kind, name, lambda: registry.get(name), is_ours or (lambda held: held is ours), register)


def claim_names(*claims: Claim) -> None:
    """Register every claim, or none: raises ValueError, before writing anything, when another plugin holds
    one of the names (naming the name, the holder and the fix). Thread-safe and idempotent."""
    with REGISTRY_LOCK:
        free = []
        for claim in claims:
            existing = claim.holder()
            if existing is None:
                free.append(claim)
            elif not claim.is_ours(existing):
                raise ValueError(f"verl {claim.kind} {claim.name!r} is already registered by {existing!r}; "
                                 "uninstall the other plugin or pick another name")
        for claim in free:
            claim.register()


def claim_name(kind: str, name: str, registry: Any, ours: Any, register: Callable[[], Any],
               is_ours: Callable[[Any], bool] | None = None) -> None:
    """`claim_names` of one `Claim.of(...)`."""
    claim_names(Claim.of(kind, name, registry, ours, register, is_ours))
