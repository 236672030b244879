"""verl 0.9.1's SGLang rollout vs SGLang 0.5.23: both defects are real in the pinned pair (negative
controls), and NPR's routed subclasses clear them: ServerArgs fields are listed, the HTTP adapter is
concrete with the session endpoints, and every weight update runs inside one begin/end session."""

import pytest

from tests.hosts import require_host, run_json
from verl_npr.sglang_compat import needs_compat

pytestmark = [pytest.mark.verl, pytest.mark.sglang]
require_host("verl")
require_host("sglang")

PROBE = r"""
import asyncio, dataclasses, json
import verl
from sglang.srt.server_args import ServerArgs
from verl.workers.rollout.replica import get_rollout_replica_class
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.sglang_rollout import async_sglang_server, sglang_rollout
from verl.workers.rollout.sglang_rollout.http_server_engine import AsyncHttpServerAdapter

out = {"stock_abstract": sorted(AsyncHttpServerAdapter.__abstractmethods__)}
try:
    dataclasses.fields(ServerArgs)
    out["stock_fields"] = "ok"
except TypeError as err:
    out["stock_fields"] = "TypeError"

replica = get_rollout_replica_class("sglang")
adapter_cls = get_rollout_class("sglang", "async")
out["replica"], out["adapter"] = replica.__name__, adapter_cls.__name__

from verl_npr.patches import sglang_server_args
sglang_server_args.apply(); sglang_server_args.apply()
names = [f.name for f in async_sglang_server.dataclasses.fields(ServerArgs)]
out["fields_listed"] = "enable_weights_cpu_backup" in names and "attention_backend" in names
out["stdlib_untouched"] = dataclasses.fields.__module__ == "dataclasses" and not hasattr(dataclasses, "__getattr__")

from verl_npr.sglang_rollout import NprSGLangServerAdapter, WeightSessionHttpAdapter
from verl_npr.patches import sglang_http_adapter
sglang_http_adapter.apply(WeightSessionHttpAdapter); sglang_http_adapter.apply(WeightSessionHttpAdapter)
out["adapter_name_rebound"] = sglang_rollout.AsyncHttpServerAdapter is WeightSessionHttpAdapter

calls = []
http = WeightSessionHttpAdapter(host="127.0.0.1", port=1, launch_server=False, model_path="unused")
async def fake_request(endpoint, payload=None, **kw):
    calls.append([endpoint, payload])
    return {"success": True}
http._make_async_request = fake_request
asyncio.run(http.begin_weight_update()); asyncio.run(http.end_weight_update())
out["endpoints"] = calls

# session around one whole update (all buckets), closed even when the update fails
events = []
class Engine:
    async def begin_weight_update(self): events.append("begin")
    async def end_weight_update(self): events.append("end")
async def stock_update(self, weights, global_steps=None, **kw):
    for name in weights:
        events.append(name)
    if global_steps == -1:
        raise RuntimeError("update failed")
sglang_rollout.ServerAdapter.update_weights = stock_update
adapter = object.__new__(NprSGLangServerAdapter)
adapter._engine = Engine()
async def no_init(): pass
adapter._init_server_adapter = no_init
adapter._is_server_tp_leader = lambda: True
asyncio.run(adapter.update_weights(iter(["bucket1", "bucket2"]), global_steps=1))
try:
    asyncio.run(adapter.update_weights(iter(["bucket3"]), global_steps=-1))
except RuntimeError:
    events.append("raised")
out["events"] = events
print(json.dumps(out))
"""


def test_both_defects_are_real_and_the_routed_subclasses_clear_them():
    out = run_json(PROBE, env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None})
    assert out["stock_abstract"] == ["begin_weight_update", "end_weight_update"]
    assert out["stock_fields"] == "TypeError"
    assert out["replica"] == "NprSGLangReplica" and out["adapter"] == "NprSGLangServerAdapter"
    assert out["fields_listed"] and out["adapter_name_rebound"] and out["stdlib_untouched"]
    assert out["endpoints"] == [["begin_weight_update", {"selector": "all"}], ["end_weight_update", {}]]
    assert out["events"] == ["begin", "bucket1", "bucket2", "end", "begin", "bucket3", "end", "raised"]


@pytest.mark.parametrize("version, expected", [("0.5.12", False), ("0.5.22", False), ("0.5.23", True),
                                               ("0.5.30", True)])
def test_compat_is_version_checked(version, expected):
    assert needs_compat(version) is expected


CPU_TRANSFER = r"""
import json, torch
from torch.multiprocessing import reductions
from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions
from sglang.srt.utils import MultiprocessingSerializer
monkey_patch_torch_reductions()
out = {}
try:
    MultiprocessingSerializer.serialize([("w", torch.ones(3))])
    out["stock"] = "ok"
except IndexError:
    out["stock"] = "IndexError"
from verl_npr.patches import sglang_cpu_weight_transfer
sglang_cpu_weight_transfer.apply(); sglang_cpu_weight_transfer.apply()
blob = MultiprocessingSerializer.serialize([("w", torch.arange(3.0))])
out["roundtrip"] = MultiprocessingSerializer.deserialize(blob)[0][1].tolist()
out["strategy"] = torch.multiprocessing.get_sharing_strategy()
print(json.dumps(out))
"""


def test_cpu_weight_transfer_through_sglangs_serializer():
    out = run_json(CPU_TRANSFER, env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": "none"})
    assert out == {"stock": "IndexError", "roundtrip": [0.0, 1.0, 2.0], "strategy": "file_system"}


META_INFO = r"""
import asyncio, json
import verl
from verl.workers.rollout.replica import TokenOutput
from verl.workers.rollout.sglang_rollout.async_sglang_server import SGLangHttpServer
from verl_npr.sglang_rollout import NprSGLangHttpServer

class FakeManager:  # SGLang's TokenizerManager as verl's generate uses it
    server_status = "Starting"
    async def generate_request(self, obj, request=None):
        yield {"output_ids": [5, 6], "meta_info": {"npr": {"stats": {"max_width": 2}, "rid": obj.rid}}}

class Req:
    def __init__(self, rid): self.rid = rid

async def stock_generate(self, prompt_ids, sampling_params, request_id, *args, **kwargs):
    out = await self.tokenizer_manager.generate_request(Req(request_id), None).__anext__()  # as verl does
    return TokenOutput(token_ids=out["output_ids"], extra_fields={"global_steps": 0})

SGLangHttpServer.generate = stock_generate  # verl's generate stands in (no SGLang server in this probe)
server = object.__new__(NprSGLangHttpServer)
server.tokenizer_manager = FakeManager()
server.tokenizer_manager.server_status = "Up"   # attribute writes reach the manager
npr_params = {"custom_params": {"npr": {"max_branches": 2}}}
npr_out = asyncio.run(server.generate([1], dict(npr_params), "a"))
plain_out = asyncio.run(server.generate([1], {}, "b"))
print(json.dumps({"npr": npr_out.extra_fields.get("npr"), "plain": plain_out.extra_fields,
                  "status": server.tokenizer_manager.server_status, "left": server._npr_records}))
"""


def test_npr_meta_info_reaches_token_output():
    """verl's SGLang generate drops meta_info; for an NPR request NprSGLangHttpServer returns meta_info["npr"]
    in TokenOutput.extra_fields, plain requests are untouched, and nothing is left behind."""
    out = run_json(META_INFO)
    assert out == {"npr": {"stats": {"max_width": 2}, "rid": "a"}, "plain": {"global_steps": 0}, "status": "Up",
                   "left": {}}
