"""After `import verl` — in a fresh process and inside a Ray worker — NPR's names are in verl's registries
(PAPO estimator and loss, reward manager, agent loop `npr_parallel`, trainer mode `npr_sync`, platform
`cpu`, attention `npr`, SGLang compat routing);
registering again changes nothing. With VERL_PLATFORM=cpu the platform is active and complete."""

import json

import pytest

from tests.hosts import require_host, run_json

pytestmark = pytest.mark.verl
require_host("verl")

SNAPSHOT = r"""
import json
def snapshot():
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.replica import RolloutReplicaRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from transformers import AttentionInterface
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    name = lambda obj: None if obj is None else f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
    return {
        "adv_estimator": name(ADV_ESTIMATOR_REGISTRY.get("npr_papo")),
        "policy_loss": name(POLICY_LOSS_REGISTRY.get("npr_papo")),
        "reward_manager": name(REWARD_MANAGER.get("npr")),
        "platform": name(PlatformRegistry.get("cpu")),
        "attention": name(AttentionInterface._global_mapping.get("npr")),
        "attention_mask": name(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get("npr")),
        "replica_loader": name(RolloutReplicaRegistry._registry.get("sglang")),
        "rollout_adapter": _ROLLOUT_REGISTRY[("sglang", "async")],
        "agent_loop": dict(_agent_loop_registry.get("npr_parallel") or {}).get("_target_"),
        "trainer_mode": name(TRAINER_REGISTRY.get("npr_sync")),
        "sizes": [len(_agent_loop_registry), len(TRAINER_REGISTRY), len(ADV_ESTIMATOR_REGISTRY), len(POLICY_LOSS_REGISTRY), len(REWARD_MANAGER),
                  len(PlatformRegistry.registered_names()), len(RolloutReplicaRegistry._registry)],
    }
"""

EXPECTED = {
    "adv_estimator": "verl_npr.papo.compute_papo_advantage",
    "policy_loss": "verl_npr.papo.compute_papo_policy_loss",
    "reward_manager": "verl_npr.reward_manager.NprRewardManager",
    "platform": "verl_npr.platform.CpuPlatform",
    "attention": "npr.attention.npr_attention_forward",
    "attention_mask": "npr.attention.no_mask",
    "replica_loader": "verl_npr.sglang_compat.load_replica",
    "rollout_adapter": "verl_npr.sglang_rollout.NprSGLangServerAdapter",
    "agent_loop": "verl_npr.agent_loop.NprParallelAgentLoop",
    "trainer_mode": "verl_npr.trainer.NprSyncTrainer",
}

FRESH = SNAPSHOT + r"""
import verl
once = snapshot()
from verl_npr.papo import register_papo
from verl_npr.platform import register_cpu_platform
from verl_npr.reward_manager import register_reward_manager
from verl_npr.sglang_compat import register_sglang_compat
from verl_npr.agent_loop import register_agent_loop
from verl_npr.trainer import register_trainer_mode
import verl_npr
verl_npr.register(); register_papo(); register_cpu_platform(); register_reward_manager(); register_sglang_compat()
register_agent_loop(); register_trainer_mode()
twice = snapshot()
from verl.utils.device import get_device_name, get_device_id, get_nccl_backend, get_torch_device
from verl.workers.engine import EngineRegistry
import verl.utils.distributed as dist, verl.workers.engine_workers as workers
device = {"name": get_device_name(), "id": get_device_id(), "backend": get_nccl_backend(),
          "max_memory_allocated": get_torch_device().max_memory_allocated(),
          "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
          "gloo_patch": workers.initialize_global_process_group_ray is dist.initialize_global_process_group_ray
                        and hasattr(dist.initialize_global_process_group_ray, "__npr_original__")}
print(json.dumps({"once": once, "twice": twice, "device": device}))
"""


def test_fresh_process_has_everything_registered_and_twice_is_once():
    result = run_json(FRESH, env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None})
    once, twice = result["once"], result["twice"]
    assert {k: v for k, v in once.items() if k != "sizes"} == EXPECTED
    assert twice == once
    assert result["device"] == {"name": "cpu", "id": "cpu", "backend": "gloo", "max_memory_allocated": 0,
                                "engine": "FSDPEngineWithLMHead", "gloo_patch": True}


def test_cpu_platform_is_never_auto_detected():
    code = "import json, verl\nfrom verl.plugin.platform import get_platform\n" \
           "print(json.dumps({'platform': type(get_platform()).__name__}))"
    assert run_json(code, env={"VERL_PLATFORM": None})["platform"] != "CpuPlatform"


@pytest.mark.slow
def test_ray_worker_has_everything_registered():
    code = SNAPSHOT + r"""
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote
def probe():
    import os, verl
    from verl.utils.device import get_device_name
    return {"pid": os.getpid(), "names": snapshot(), "device": get_device_name()}

out = ray.get(probe.remote())
ray.shutdown()
print(json.dumps(out))
"""
    result = run_json(code, env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None}, timeout=300)
    assert {k: v for k, v in result["names"].items() if k != "sizes"} == EXPECTED
    assert result["device"] == "cpu"
