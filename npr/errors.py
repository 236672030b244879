"""Every error this project raises on purpose, in one place (pure Python)."""

from __future__ import annotations


class NprError(Exception):
    """Base class of every error this project raises on purpose."""


class TagTokenError(NprError, ValueError):
    """A tag is not a single token of the tokenizer."""


class SchemaError(NprError, ValueError):
    """A structural error with the token (or character) offset where it was found."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset


class PoolExhaustedError(NprError, RuntimeError):
    """No free KV slot is left."""


class HostVersionError(NprError, RuntimeError):
    """An installed host (verl, SGLang) is outside the supported range."""
