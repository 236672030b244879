"""Attention backend "npr": the backend the user would otherwise get (torch_native, triton, flashinfer,
fa3), built by SGLang's own factory and given an NPR subclass, so every isinstance check and attribute
of the inner backend keeps working. With page_size 1 a joined request's slot list (prefix + branches in
order) is read by the unchanged kernel; fork-join needs per-request positions (scheduler hooks), not a
new kernel. Inner backend: env NPR_INNER_ATTENTION_BACKEND, else torch_native on CPU, flashinfer on GPU.
"""

from __future__ import annotations

import os
from typing import Any

from npr.errors import NprError

NAME = "npr"
INNER_ENV = "NPR_INNER_ATTENTION_BACKEND"
INNER_CHOICES = ("torch_native", "triton", "flashinfer", "fa3")


class NprBackendError(NprError, ValueError):
    """The "npr" backend cannot be built with this configuration; the message says what to change."""


def inner_backend_name(device: str, env: dict[str, str] | None = None) -> str:
    """Name of the backend that "npr" wraps on `device`; raises NprBackendError for an unknown choice."""
    env = os.environ if env is None else env
    chosen = env.get(INNER_ENV, "").strip()
    if not chosen:
        return "torch_native" if str(device).startswith("cpu") else "flashinfer"
    if chosen not in INNER_CHOICES:
        raise NprBackendError(f"{INNER_ENV}={chosen!r} is not a backend that 'npr' can wrap; "
                              f"choose one of {list(INNER_CHOICES)}")
    if str(device).startswith("cpu") and chosen != "torch_native":
        raise NprBackendError(f"{INNER_ENV}={chosen!r} needs a GPU but the device is {device!r}; "
                              "use torch_native on CPU (or unset the variable)")
    return chosen


class NprBackendMixin:
    """Members given to the NPR subclass of the inner backend (test with is_npr_backend()).

    Forward passes are the inner backend's: a branch's KV is computed while it decodes (seeing prefix +
    its own tokens), and after a join every later token may see everything before it, so causal
    attention over the request's slot row is the DESIGN §4 rule. A structured mask is needed only where
    branch tokens are recomputed (re-prefill after retraction), which fork-join requests never do."""

    npr_inner_backend: str = ""


_SUBCLASSES: dict[type, type] = {}


def is_npr_backend(backend: Any) -> bool:
    return type(backend) in _SUBCLASSES.values()


def _npr_class(inner_cls: type) -> type:
    """A direct subclass of the inner backend's class (a second base would change the object layout and
    forbid the __class__ swap), carrying the mixin's members."""
    cls = _SUBCLASSES.get(inner_cls)
    if cls is None:
        members = {k: v for k, v in vars(NprBackendMixin).items() if k not in ("__dict__", "__weakref__")}
        cls = type(inner_cls)(f"Npr{inner_cls.__name__}", (inner_cls,), {**members, "__module__": __name__})
        _SUBCLASSES[inner_cls] = cls
    return cls


def create_npr_backend(runner: Any):
    """Factory registered as attention backend "npr" (called by SGLang with the ModelRunner)."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    from sglang_npr.hooks import check_patches_applied

    check_patches_applied()  # the model runner exists only after load_plugins() applied every hook
    inner = inner_backend_name(getattr(runner, "device", "cuda"))
    backend = ATTENTION_BACKENDS[inner](runner)
    backend.__class__ = _npr_class(type(backend))
    backend.npr_inner_backend = inner
    return backend
