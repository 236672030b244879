"""Stage 1 end to end on CPU: `python -m verl.trainer.main_ppo` with recipes/npr_zero/tiny_cpu runs two
GRPO steps with the real SGLang rollout (stock decoding, torch_native on CPU) on the tiny model and data
from `npr data`, and logs the format-gated Stage-1 reward (an untrained model's format is invalid, so
every score lies in [-2, -1): -1 plus a format penalty)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.verl, pytest.mark.sglang, pytest.mark.slow]
require_host("verl")
require_host("sglang")

ROOT = Path(__file__).resolve().parents[2]
METRIC_RE = re.compile(r"step:(\d+) - .*")


def test_two_grpo_steps_log_the_stage1_reward(tmp_path):
    import json

    from npr.cli import main
    from npr.tiny import save_tiny

    model = save_tiny(tmp_path / "model")
    (tmp_path / "raw.json").write_text(json.dumps(
        [{"question": q, "answer": a} for q, a in [("What is 6*7?", "42"), ("What is 3+4?", "7"),
                                                   ("Twice 21?", "42"), ("Half of 84?", "42")]]))
    data = str(tmp_path / "train.parquet")
    assert main(["data", "--input", str(tmp_path / "raw.json"), "--output", data, "--data-source", "toy",
                 "--no-instruction"]) == 0
    env = make_env({"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_PLUGINS": None, "SGLANG_USE_CPU_ENGINE": None})
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path",
                           str(ROOT / "recipes" / "npr_zero"), "--config-name", "tiny_cpu",
                           f"actor_rollout_ref.model.path={model}", f"data.train_files={data}",
                           f"data.val_files={data}", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
                           f"hydra.run.dir={tmp_path / 'hydra'}"],  # Hydra's run files, out of the checkout
                          capture_output=True, text=True, timeout=1500, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    steps = {}
    for match in METRIC_RE.finditer(proc.stdout):
        fields = dict(re.findall(r"([\w/@.-]+):(-?[\d.]+(?:e[-+]?\d+)?)", match.group(0)))
        steps.setdefault(int(match.group(1)), {}).update(fields)
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        low, high = float(metrics["critic/score/min"]), float(metrics["critic/score/max"])
        assert -2.0 <= low <= high < -1.0
        assert float(metrics["training/rollout_probs_diff_max"]) < 1e-4  # weights reached SGLang
