"""The demo's RL iterations (Stage 1 and Stage 3): rollouts from the fork-join engine, rewards from
`reward` (Stage 1: the format-gated NPR-Zero reward; Stage 3: the PAPO reward), advantages from verl's
GRPO estimator (Stage 1) or the registered `npr_papo` one (Stage 3), one update of verl's actor; the
engine's log-probs are checked against the actor's on every rollout."""

from __future__ import annotations

from typing import Any

from verl_npr.demo.actor import actor_log_probs, update
from verl_npr.demo.config import MAX_BRANCHES
from verl_npr.demo.task import prompt_ids

STAGES = {"zero": "Stage 1", "papo": "PAPO"}  # reward stage -> the name the demo logs it under


def advantages_of(stage: str, token_rewards, mask, groups: list[int]):
    """Stage 1: verl's GRPO (group mean and std); Stage 3: npr_papo (group mean, one batch std)."""
    import numpy as np

    if stage == "zero":
        from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

        return compute_grpo_outcome_advantage(token_rewards, mask, np.array(groups))[0]
    from verl_npr.papo import compute_papo_advantage

    return compute_papo_advantage(token_rewards, mask, index=groups)[0]


def rl_iteration(stage: str, worker, engine, tokenizer, templates, problems: list[dict], group: int, lr: float,
                 max_new: int, seed: int, step: int) -> dict[str, Any]:
    """`group` rollouts of each problem from the engine (parallel mode, temperature 1), the stage's rewards
    and advantages, one actor update at `lr`. Returns the iteration's record: accuracy, parallel-format
    (trigger) rate, the engine-vs-actor log-prob gap on its rollouts, the update's metrics."""
    import torch

    from npr.eval.engines import Sampling
    from reward import stage_reward
    from verl_npr.batch import Sample, make_data_proto, trains
    from verl_npr.local_actor import set_lr

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {sorted(STAGES)}, got {stage!r}")
    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems for _ in range(group)]
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new, max_branches=MAX_BRANCHES)
    outputs = engine.generate(prompts, sampling, "parallel", seed)
    samples, rewards = [], []
    for i, out in enumerate(outputs):
        traj = out.trajectory
        layout = traj.layout(templates.tags)
        samples.append(Sample(list(traj.prompt_ids), list(traj.token_ids), layout,
                              trains(layout, traj.finish_reason, len(traj.token_ids)), list(traj.logprobs)))
        rewards.append(stage_reward(out.text, problems[i // group]["answer"], stage=stage))
    data = make_data_proto(samples, tokenizer.pad_token_id)
    mask = data.batch["response_mask"]
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    for row, sample in enumerate(samples):
        token_rewards[row, len(sample.response_ids) - 1] = float(rewards[row]["score"])
    advantages = advantages_of(stage, token_rewards, mask, [i // group for i in range(len(samples))])
    engine_lp = data.batch["rollout_log_probs"].float()
    trainer_lp = actor_log_probs(worker, data)
    real = torch.zeros(mask.shape, dtype=torch.bool)
    for row, sample in enumerate(samples):
        real[row, :len(sample.response_ids)] = True
    gap = float((trainer_lp - engine_lp)[real].abs().max())
    set_lr(worker, lr)
    metrics = update(worker, data, advantages, engine_lp, step)
    forked = [out.trajectory.stats.get("num_forks", 0) > 0 for out in outputs]
    n = len(samples)
    return {"rollouts": n, "correct": sum(r["accuracy"] for r in rewards) / n,
            "format_valid": sum(bool(r["is_valid"]) for r in rewards) / n, "trigger_rate": sum(forked) / n,
            "mean_reward": sum(float(r["score"]) for r in rewards) / n, "trains": sum(s.is_valid for s in samples),
            "logprob_gap": gap, **metrics}
