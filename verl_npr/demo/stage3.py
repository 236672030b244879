"""Stage 3 of the demo: one PAPO iteration: rollouts from the fork-join engine, Stage-3 rewards from
`reward`, advantages from the registered `npr_papo` estimator, one update of verl's actor; the engine's
log-probs are checked against the actor's on every rollout."""

from __future__ import annotations

from typing import Any

from verl_npr.demo.actor import actor_log_probs, update
from verl_npr.demo.config import MAX_BRANCHES, DemoConfig
from verl_npr.demo.task import prompt_ids


def papo_iteration(worker, engine, tokenizer, templates, problems: list[dict], cfg: DemoConfig, max_new: int,
                   seed: int, step: int) -> dict[str, Any]:
    """Rollouts of each problem (papo_group each) from the engine, Stage-3 rewards, npr_papo advantages, one
    actor update. Returns the iteration's record, with the engine-vs-actor log-prob gap on its rollouts."""
    import torch

    from npr.eval.engines import Sampling
    from reward import stage_reward
    from verl_npr.batch import Sample, make_data_proto, trains
    from verl_npr.local_actor import set_lr
    from verl_npr.papo import compute_papo_advantage

    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems for _ in range(cfg.papo_group)]
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new, max_branches=MAX_BRANCHES)
    outputs = engine.generate(prompts, sampling, "parallel", seed)
    samples, rewards = [], []
    for i, out in enumerate(outputs):
        traj = out.trajectory
        layout = traj.layout(templates.tags)
        samples.append(Sample(list(traj.prompt_ids), list(traj.token_ids), layout,
                              trains(layout, traj.finish_reason, len(traj.token_ids)), list(traj.logprobs)))
        rewards.append(float(stage_reward(out.text, problems[i // cfg.papo_group]["answer"], stage="papo")["score"]))
    data = make_data_proto(samples, tokenizer.pad_token_id)
    mask = data.batch["response_mask"]
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    for row, sample in enumerate(samples):
        token_rewards[row, len(sample.response_ids) - 1] = rewards[row]
    advantages, _ = compute_papo_advantage(token_rewards, mask, index=[i // cfg.papo_group for i in range(len(samples))])
    engine_lp = data.batch["rollout_log_probs"].float()
    trainer_lp = actor_log_probs(worker, data)
    real = torch.zeros(mask.shape, dtype=torch.bool)
    for row, sample in enumerate(samples):
        real[row, :len(sample.response_ids)] = True
    gap = float((trainer_lp - engine_lp)[real].abs().max())
    set_lr(worker, cfg.papo_lr)
    metrics = update(worker, data, advantages, engine_lp, step)
    widths = [out.trajectory.stats.get("max_width", 1) for out in outputs]
    return {"rollouts": len(samples), "correct": sum(r > 0 for r in rewards) / len(rewards),
            "mean_reward": sum(rewards) / len(rewards), "valid": sum(s.is_valid for s in samples),
            "min_width": min(widths), "logprob_gap": gap, **metrics}

