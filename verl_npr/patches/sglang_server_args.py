"""Patch (LEDGER.md): verl 0.9.1 `async_sglang_server.SGLangHttpServer.launch_server` calls
`dataclasses.fields(ServerArgs)`; SGLang 0.5.23's ServerArgs is a msgspec struct, so that raises
TypeError. The module's `dataclasses` name becomes a proxy of the stdlib module whose `fields`
also lists msgspec struct fields. Removal: when verl lists ServerArgs fields without dataclasses."""

from __future__ import annotations

import dataclasses
import types

from npr.versions import check_host_version

TARGET = "verl.workers.rollout.sglang_rollout.async_sglang_server.dataclasses"
VERL_VERSIONS = ">=0.9.1,<0.10"


def struct_aware_fields(class_or_instance):
    """dataclasses.fields, extended to msgspec structs (objects with `.name`, as dataclasses.Field)."""
    names = getattr(class_or_instance, "__struct_fields__", None)
    if names is not None and not dataclasses.is_dataclass(class_or_instance):
        return tuple(types.SimpleNamespace(name=name) for name in names)
    return dataclasses.fields(class_or_instance)


class _DataclassesProxy(types.ModuleType):
    def __getattr__(self, name):
        return getattr(dataclasses, name)


PROXY = _DataclassesProxy("dataclasses")
PROXY.fields = struct_aware_fields


def apply() -> None:
    """Idempotent."""
    check_host_version("verl", VERL_VERSIONS)
    from verl.workers.rollout.sglang_rollout import async_sglang_server

    async_sglang_server.dataclasses = PROXY
