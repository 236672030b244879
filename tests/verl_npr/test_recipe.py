"""recipes/npr_rl composes against the installed verl: `python -m verl.trainer.main_ppo --config-path
"$PWD/recipes/npr_rl" --config-name npr_rl --cfg job` (and `--config-name tiny_cpu`) exits 0 and shows NPR's keys."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.verl, pytest.mark.slow]
require_host("verl")

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "npr_rl"


def compose(name: str, *overrides: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(RECIPE),
                           "--config-name", name, "--cfg", "job", *overrides], capture_output=True, text=True,
                          timeout=300, env=make_env({"VERL_USE_EXTERNAL_PLUGINS": None}), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def configs():
    return {name: compose(name) for name in ("npr_rl", "tiny_cpu")}


def test_stage3_keys(configs):
    for cfg in configs.values():
        arr = cfg["actor_rollout_ref"]
        assert cfg["algorithm"]["adv_estimator"] == "npr_papo"
        assert arr["actor"]["policy_loss"]["loss_mode"] == "npr_papo"
        assert arr["actor"]["use_kl_loss"] is False and cfg["algorithm"]["use_kl_in_reward"] is False
        assert arr["model"]["override_config"]["attn_implementation"] == "npr"
        assert arr["model"]["use_fused_kernels"] is False
        assert arr["rollout"]["name"] == "sglang"
        assert arr["rollout"]["engine_kwargs"]["sglang"]["attention_backend"] == "npr"
        assert arr["rollout"]["agent"]["default_agent_loop"] == "npr_parallel"
        assert arr["rollout"]["agent"]["agent_loop_manager_class"] == "verl_npr.agent_loop_worker.NprAgentLoopManager"
        assert "disable_overlap_schedule" not in arr["rollout"]["engine_kwargs"]["sglang"]  # SGLang's default
        assert arr["rollout"]["skip_tokenizer_init"] is False
        assert cfg["trainer"]["v1"]["trainer_mode"] == "npr_sync"
        assert cfg["algorithm"]["rollout_correction"] is None  # it raises when every row is masked
        assert cfg["reward"]["reward_manager"]["name"] == "npr"
        assert cfg["reward"]["custom_reward_function"] == {"path": "pkg://reward", "name": "compute_score_papo"}
    stage3 = configs["npr_rl"]
    assert stage3["data"]["train_batch_size"] == 16 and stage3["actor_rollout_ref"]["rollout"]["n"] == 16
    assert stage3["data"]["max_response_length"] == 30000
    assert stage3["actor_rollout_ref"]["actor"]["optim"]["lr"] == pytest.approx(1e-7)
    assert stage3["actor_rollout_ref"]["actor"]["optim"]["lr_scheduler_type"] == "constant"
    assert stage3["actor_rollout_ref"]["rollout"]["temperature"] == 1.0


def test_tiny_cpu_keys(configs):
    cfg = configs["tiny_cpu"]
    assert cfg["trainer"]["device"] == "cpu" and cfg["trainer"]["total_training_steps"] == 2
    assert cfg["actor_rollout_ref"]["actor"]["strategy"] == "fsdp2"
    assert cfg["actor_rollout_ref"]["rollout"]["engine_kwargs"]["sglang"]["device"] == "cpu"
    assert cfg["ray_kwargs"]["ray_init"]["num_gpus"] == 1
    assert cfg["actor_rollout_ref"]["rollout"]["custom"]["npr"]["script"] == [[3, 5], [4, 4, 2]]


def test_command_line_overrides_still_apply():
    cfg = compose("npr_rl", "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.model.path=/models/x")
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 4
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/x"
