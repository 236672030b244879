"""Subclasses of verl 0.9.1's SGLang rollout that work with SGLang 0.5.23 (see `verl_npr.sglang_compat`).
Importing this module imports SGLang; only verl's rollout registries do (lazily)."""

from __future__ import annotations

import ray

from verl.workers.rollout.sglang_rollout.async_sglang_server import SGLangHttpServer, SGLangReplica
from verl.workers.rollout.sglang_rollout.http_server_engine import AsyncHttpServerAdapter
from verl.workers.rollout.sglang_rollout.sglang_rollout import ServerAdapter

from verl_npr.patches import sglang_cpu_weight_transfer, sglang_http_adapter, sglang_server_args
from verl_npr.platform import is_selected as is_cpu_platform


class NprSGLangHttpServer(SGLangHttpServer):
    """verl's SGLang server actor; its launch can list the fields of SGLang 0.5.23's msgspec ServerArgs."""

    async def launch_server(self, *args, **kwargs):
        sglang_server_args.apply()
        return await super().launch_server(*args, **kwargs)


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
