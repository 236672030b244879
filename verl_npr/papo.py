"""PAPO (DESIGN §6) for verl: the advantage estimator and the policy loss, both named `npr_papo`.

Structural filtering: a malformed or truncated rollout reaches verl with an all-zero `response_mask`
row. Such a row gets a zero advantage (so no gradient), and is left out of its group's mean and of the
batch std; shapes never change. Importing this module registers nothing (`register_papo` does)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

NAME = "npr_papo"
DEFAULT_EPSILON = 1e-6


def valid_rows(response_mask: torch.Tensor) -> torch.Tensor:
    """BoolTensor [B]: rows with at least one response token that counts (the structurally valid ones)."""
    return response_mask.reshape(response_mask.shape[0], -1).sum(-1) > 0


def compute_papo_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any = None,
                           epsilon: float = DEFAULT_EPSILON, config: Any = None, **_: Any
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i = (r_i - mean_{valid members of group(i)} r) / (std_{valid rows of the batch} r + eps).

    token_level_rewards, response_mask: [B, T]; index: group id per row (verl's `uid`), length B; all
    rows are one group when it is None. r_i is the row's reward sum. The std is the unbiased std over
    the valid rows (0 when fewer than two). Returns (advantages, returns), both [B, T] float, equal,
    zero on invalid rows and masked tokens. Raises ValueError for mismatched shapes or index length.
    """
    if token_level_rewards.shape != response_mask.shape or token_level_rewards.dim() != 2:
        raise ValueError(f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must both be [batch, response_length]")
    batch = token_level_rewards.shape[0]
    groups = np.zeros(batch, dtype=np.int64) if index is None else np.asarray(index, dtype=object)
    if len(groups) != batch:
        raise ValueError(f"index has {len(groups)} entries for a batch of {batch} rows; pass one uid per row")
    with torch.no_grad():
        mask = response_mask.to(torch.float32)
        scores = token_level_rewards.to(torch.float32).sum(-1).cpu()
        valid = valid_rows(response_mask).cpu()
        members: dict[Any, list[int]] = defaultdict(list)
        for row in range(batch):
            if valid[row]:
                members[groups[row]].append(row)
        means = torch.zeros(batch)
        for rows in members.values():
            means[rows] = scores[rows].mean()
        num_valid = int(valid.sum())
        std = scores[valid].std() if num_valid > 1 else torch.zeros(())
        advantage = torch.where(valid, (scores - means) / (std + epsilon), torch.zeros(()))
        advantages = advantage[:, None].to(mask.device) * mask
    return advantages, advantages


def compute_papo_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                             response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                             rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Strict on-policy loss: ratio = exp(logp - logp.detach()) (value 1, gradient of logp), loss
    -A * ratio, no clipping, no KL, aggregated by verl's `agg_loss` with the actor's global batch
    info. All tensors [B, T]. A batch without any valid token gives a zero loss (not NaN)."""
    from verl.trainer.ppo.core_algos import agg_loss

    ratio = torch.exp(log_prob - log_prob.detach())
    pg_losses = -advantages * ratio
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    batch_info = dict(getattr(config, "global_batch_info", None) or {})
    mask = response_mask.to(pg_losses.dtype)
    if not bool(mask.any()) or batch_info.get("batch_num_tokens") == 0:
        pg_loss = (pg_losses * 0.0).sum()
    else:
        pg_loss = agg_loss(loss_mat=pg_losses, loss_mask=mask, loss_agg_mode=loss_agg_mode, **batch_info)
    with torch.no_grad():
        count = mask.sum().clamp(min=1)
        staleness = ((old_log_prob - log_prob) * mask).sum() / count  # 0 when strictly on-policy
    metrics = {"actor/ppo_kl": float(staleness), "actor/pg_clipfrac": 0.0,
               "actor/papo_valid_rows": float(valid_rows(response_mask).float().mean())}
    return pg_loss, metrics


def register_papo() -> None:
    """Register the estimator and the loss as `npr_papo` in verl's registries. Idempotent.

    Raises ValueError when another function already holds the name."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, register_adv_est, \
        register_policy_loss

    from verl_npr.registries import Claim, claim_names

    claim_names(Claim.of("advantage estimator", NAME, ADV_ESTIMATOR_REGISTRY, compute_papo_advantage,
                         lambda: register_adv_est(NAME)(compute_papo_advantage)),
                Claim.of("policy loss", NAME, POLICY_LOSS_REGISTRY, compute_papo_policy_loss,
                         lambda: register_policy_loss(NAME)(compute_papo_policy_loss)))
