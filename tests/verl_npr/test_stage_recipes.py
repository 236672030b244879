"""recipes/npr_zero (on `verl.trainer.main_ppo`) and recipes/npr_beta (on `verl.trainer.sft_trainer`)
compose against the installed verl with `--cfg job` and carry the stages' settings."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.verl, pytest.mark.slow]
require_host("verl")

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def compose(entry: str, recipe: str, name: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", entry, "--config-path", str(RECIPES / recipe), "--config-name",
                           name, "--cfg", "job"], capture_output=True, text=True, timeout=300,
                          env=make_env({"VERL_USE_EXTERNAL_PLUGINS": None}), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize("name", ["npr_zero", "tiny_cpu"])
def test_npr_zero_composes_with_stage1_settings(name):
    cfg = compose("verl.trainer.main_ppo", "npr_zero", name)
    algo, actor, rollout = cfg["algorithm"], cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    assert algo["adv_estimator"] == "grpo" and algo["use_kl_in_reward"] is False
    assert (actor["clip_ratio_low"], actor["clip_ratio_high"]) == (0.2, 0.28)
    assert actor["loss_agg_mode"] == "token-mean" and actor["use_kl_loss"] is False
    assert rollout["name"] == "sglang" and rollout["temperature"] == 1.0
    assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://reward"
    assert cfg["reward"]["custom_reward_function"]["name"] == "compute_score_zero"
    if name == "npr_zero":
        assert cfg["data"]["train_batch_size"] == 32 and rollout["n"] == 16
        assert cfg["data"]["max_response_length"] == 30000
        assert actor["optim"]["lr"] == pytest.approx(1e-6)
        assert algo["filter_groups"]["enable"] is True and algo["filter_groups"]["metric"] == "reward"
    else:
        assert cfg["trainer"]["device"] == "cpu" and cfg["trainer"]["total_training_steps"] == 2
        assert actor["strategy"] == "fsdp2" and rollout["engine_kwargs"]["sglang"]["device"] == "cpu"


@pytest.mark.parametrize("name", ["npr_beta", "tiny_cpu"])
def test_npr_beta_composes_with_stage2_settings(name):
    cfg = compose("verl.trainer.sft_trainer", "npr_beta", name)
    data, model, optim = cfg["data"], cfg["model"], cfg["optim"]
    assert data["custom_cls"] == {"path": "pkg://verl_npr.sft_dataset", "name": "NprSFTDataset"}
    assert data["pad_mode"] == "no_padding" and data["micro_batch_size_per_gpu"] > 1
    assert model["override_config"]["attn_implementation"] == "npr" and model["use_fused_kernels"] is False
    assert cfg["engine"]["strategy"] == "fsdp2"
    if name == "npr_beta":
        assert data["train_batch_size"] == 8 and data["max_length"] == 32768
        assert optim["lr"] == pytest.approx(1e-6) and optim["lr_scheduler_type"] == "cosine"
        assert optim["lr_warmup_steps_ratio"] == 0.05 and optim["weight_decay"] == 0.1
        assert cfg["trainer"]["total_epochs"] == 1
    else:
        assert cfg["trainer"]["device"] == "cpu" and cfg["engine"]["mixed_precision"]["param_dtype"] == "fp32"
