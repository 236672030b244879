"""Subclasses of verl 0.9.1's SGLang rollout that work with SGLang 0.5.23 (see `verl_npr.sglang_compat`).
Importing this module imports SGLang; only verl's rollout registries do (lazily)."""

from __future__ import annotations

import ray

from verl.workers.rollout.sglang_rollout.async_sglang_server import SGLangHttpServer, SGLangReplica
from verl.workers.rollout.sglang_rollout.http_server_engine import AsyncHttpServerAdapter
from verl.workers.rollout.sglang_rollout.sglang_rollout import ServerAdapter

from npr.wire import NPR_KEY
from verl_npr.patches import sglang_cpu_weight_transfer, sglang_http_adapter, sglang_server_args
from verl_npr.platform import is_selected as is_cpu_platform


class _MetaInfoTap:
    """Stands in for the server's SGLang TokenizerManager (every attribute is the manager's): outputs of
    the requests listed in `records` leave their meta_info["npr"] there."""

    def __init__(self, manager, records: dict):
        object.__setattr__(self, "_manager", manager)
        object.__setattr__(self, "_records", records)

    def __getattr__(self, name):
        return getattr(self._manager, name)

    def __setattr__(self, name, value):
        setattr(self._manager, name, value)

    async def generate_request(self, obj, request=None):
        async for out in self._manager.generate_request(obj, request):
            rid = getattr(obj, "rid", None)
            if isinstance(rid, str) and rid in self._records:
                self._records[rid] = (out.get("meta_info") or {}).get(NPR_KEY)
            yield out


class NprSGLangHttpServer(SGLangHttpServer):
    """verl's SGLang server actor: its launch can list the fields of SGLang 0.5.23's msgspec ServerArgs,
    and an NPR request's `meta_info["npr"]` (which verl's generate drops) comes back in
    `TokenOutput.extra_fields["npr"]`."""

    @property
    def tokenizer_manager(self):
        manager = self.__dict__.get("_npr_tokenizer_manager")
        return None if manager is None else _MetaInfoTap(manager, self._npr_records)

    @tokenizer_manager.setter
    def tokenizer_manager(self, manager):
        self.__dict__.setdefault("_npr_records", {})
        self.__dict__["_npr_tokenizer_manager"] = manager

    async def launch_server(self, *args, **kwargs):
        sglang_server_args.apply()
        self.__dict__.setdefault("_npr_records", {})
        return await super().launch_server(*args, **kwargs)

    async def generate(self, prompt_ids, sampling_params, request_id, *args, **kwargs):
        if NPR_KEY not in ((sampling_params or {}).get("custom_params") or {}):
            return await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
        records = self.__dict__.setdefault("_npr_records", {})
        records[request_id] = None
        try:
            output = await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
            record = records.get(request_id)
        finally:
            records.pop(request_id, None)
        if record is not None:
            output.extra_fields[NPR_KEY] = record
        return output


class NprSGLangReplica(SGLangReplica):
    """verl's SGLang replica launching `NprSGLangHttpServer` actors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(NprSGLangHttpServer)


class WeightSessionHttpAdapter(AsyncHttpServerAdapter):
    """verl's HTTP adapter with SGLang 0.5.23's weight-update session endpoints."""

    async def begin_weight_update(self, selector: str = "all") -> dict:
        return await self._make_async_request("begin_weight_update", {"selector": selector})

    async def end_weight_update(self) -> dict:
        return await self._make_async_request("end_weight_update", {})


class NprSGLangServerAdapter(ServerAdapter):
    """verl's in-worker SGLang adapter; every weight update runs inside one begin/end session."""

    async def _init_server_adapter(self):
        sglang_http_adapter.apply(WeightSessionHttpAdapter)
        return await super()._init_server_adapter()

    async def update_weights(self, weights, global_steps: int = None, **kwargs):
        if is_cpu_platform():
            sglang_cpu_weight_transfer.apply()
        await self._init_server_adapter()
        leader = self._engine is not None and self._is_server_tp_leader()
        if leader:
            await self._engine.begin_weight_update()
        try:
            return await super().update_weights(weights, global_steps=global_steps, **kwargs)
        finally:
            if leader:
                await self._engine.end_weight_update()
