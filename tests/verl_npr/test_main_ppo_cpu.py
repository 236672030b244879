"""The user's command end to end on CPU: `VERL_PLATFORM=cpu python -m verl.trainer.main_ppo --config-path
"$PWD/recipes/npr_rl" --config-name tiny_cpu` runs two PPO steps through Ray, TransferQueue, the real SGLang rollout with
attention backend `npr` (fork-join in the scheduler), the agent loop `npr_parallel`, PAPO and the fsdp2
actor with the attention `npr`; exit 0, and the console logger shows the reward, PAPO's valid rows, the
trigger rate, and rollout log-probs that match the actor's on fork-join trajectories. A second run whose
rollouts are all truncated (every row masked) also completes: no gradient, reward still logged."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.verl, pytest.mark.sglang, pytest.mark.slow]
require_host("verl")
require_host("sglang")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1200
STEP = re.compile(r"step:(\d+) - (.*)")


def write_data(path: Path, num_rows: int = 8) -> None:
    import pandas as pd

    rows = [{"data_source": "npr_tiny", "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
             "extra_info": {"index": i, "split": "train"}} for i in range(num_rows)]
    pd.DataFrame(rows).to_parquet(path)


def parse_steps(log: str) -> dict[int, dict[str, float]]:
    """verl's console logger lines `step:N - key:value - key:value ...` -> {N: {key: value}}."""
    steps: dict[int, dict[str, float]] = {}
    for match in STEP.finditer(log):
        values = {}
        for item in match.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                pass
        steps.setdefault(int(match.group(1)), {}).update(values)
    return steps


def run_main_ppo(tmp: Path, *overrides: str) -> dict[int, dict[str, float]]:
    from npr.tiny import save_tiny

    model = save_tiny(tmp / "model")
    write_data(tmp / "train.parquet")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(ROOT / "recipes" / "npr_rl"),
           "--config-name", "tiny_cpu", f"actor_rollout_ref.model.path={model}",
           f"data.train_files={tmp / 'train.parquet'}", f"data.val_files={tmp / 'train.parquet'}",
           f"trainer.default_local_dir={tmp / 'ckpt'}", "+ray_kwargs.ray_init.include_dashboard=false", *overrides]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = make_env({"VERL_PLATFORM": "cpu", "SGLANG_USE_CPU_ENGINE": None, "VERL_USE_EXTERNAL_PLUGINS": None,
                    "PYTHONPATH": pythonpath, "RAY_DEDUP_LOGS": "0"})
    log_path = tmp / "main_ppo.log"  # streamed, so a hang can be followed while it runs
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            returncode = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the driver and the Ray cluster it started
            proc.wait(timeout=60)
            returncode = None
    log = log_path.read_text(errors="replace")
    if returncode is None:
        pytest.fail(f"main_ppo did not finish within {TIMEOUT_S} s (full log: {log_path}); last output:\n{log[-6000:]}")
    assert returncode == 0, f"main_ppo exited {returncode} (full log: {log_path}):\n{log[-8000:]}"
    return parse_steps(log)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_main_ppo(tmp_path_factory.mktemp("main_ppo"))


@pytest.fixture(scope="module")
def truncated_run(tmp_path_factory):
    # the forced structure needs 79 tokens: with 40 every rollout is truncated, so every row is masked
    return run_main_ppo(tmp_path_factory.mktemp("main_ppo_truncated"), "actor_rollout_ref.rollout.custom.npr.max_total_tokens=40")


def test_two_steps_log_reward_papo_and_trigger_rate(run):
    assert sorted(run) == [1, 2], f"steps logged: {sorted(run)}"
    for step, m in run.items():
        for key in ("critic/score/mean", "actor/papo_valid_rows", "actor/pg_loss", "npr/trigger_rate",
                    "npr/width/max", "npr/valid_share", "npr/critical_path_tokens/mean", "npr/total_tokens/mean",
                    "timing_s/step"):
            assert key in m, f"step {step} did not log {key}; logged: {sorted(m)}"
        # tiny_cpu forces two blocks (widths 2 and 3) on every rollout: all branch, all stop by themselves
        assert m["npr/trigger_rate"] == 1.0 and m["npr/width/max"] == 3.0
        assert m["npr/total_tokens/mean"] > m["npr/critical_path_tokens/mean"]
        assert m["npr/valid_share"] == 1.0 and m["actor/papo_valid_rows"] == 1.0
        assert -1.0 <= m["critic/score/mean"] <= 1.0


def test_rollout_log_probs_match_the_actor_on_fork_join_trajectories(run):
    # step 1: SGLang's fork-join log-probs vs the actor's structured forward, same initial weights
    assert run[1]["training/rollout_probs_diff_max"] < 1e-3


def test_a_batch_of_truncated_rollouts_trains_nothing_and_still_logs_its_reward(truncated_run):
    assert sorted(truncated_run) == [1, 2]
    for m in truncated_run.values():
        assert m["npr/valid_share"] == 0.0 and m["npr/truncated_share"] == 1.0
        assert m["npr/total_tokens/mean"] == 40.0 and m["npr/trigger_rate"] == 1.0
        assert m["actor/papo_valid_rows"] == 0.0 and m["actor/pg_loss"] == 0.0 and m["actor/grad_norm"] == 0.0
        assert m["critic/score/mean"] == -1.0  # the reward is computed and logged for masked rows too
