"""PAPO numerics against hand-computed tables (DESIGN §6): group mean over valid members, one batch std
over valid rows, all-zero response_mask rows excluded and given no advantage; strict on-policy loss."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.hosts import require_host

pytestmark = pytest.mark.verl
require_host("verl")

from verl_npr.papo import compute_papo_advantage, compute_papo_policy_loss  # noqa: E402

EPS = 1e-6


def outcome(rewards, lengths, width=4):
    """token_level_rewards with the reward on the last valid token, and the response mask."""
    scores = torch.zeros(len(rewards), width)
    mask = torch.zeros(len(rewards), width)
    for row, (r, n) in enumerate(zip(rewards, lengths)):
        mask[row, :n] = 1
        scores[row, max(n, 1) - 1] = r
    return scores, mask


def test_ragged_groups_with_an_invalid_row_and_a_single_member_group():
    # rows:      0    1    2 (invalid)  3    4    5
    rewards = [1.0, -1.0, 1.0, 1.0, -1.0, 1.0]
    groups = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)
    scores, mask = outcome(rewards, [4, 2, 0, 3, 4, 1])
    adv, ret = compute_papo_advantage(scores, mask, groups)
    # valid rewards 1,-1,1,-1,1: mean 0.2, unbiased var (3*.64 + 2*1.44)/4 = 1.2
    std = math.sqrt(1.2)
    # group means over valid members: a = (1 - 1)/2 = 0 (row 2 left out), b = 0, c = 1 (alone)
    want = torch.tensor([1 / (std + EPS), -1 / (std + EPS), 0.0, 1 / (std + EPS), -1 / (std + EPS), 0.0])
    torch.testing.assert_close(adv, want[:, None] * mask, rtol=0, atol=1e-7)
    assert torch.equal(adv, ret)
    assert not adv[2].any()


def test_all_equal_rewards_give_zero_advantages_not_nan():
    scores, mask = outcome([1.0] * 4, [4, 3, 2, 1])
    adv, _ = compute_papo_advantage(scores, mask, np.array([0, 0, 1, 1]))
    assert torch.isfinite(adv).all() and not adv.any()


@pytest.mark.parametrize("lengths", [[0, 0, 0], [3, 0, 0]])
def test_no_or_one_valid_row_gives_zeros(lengths):
    scores, mask = outcome([1.0, -1.0, 1.0], lengths)
    adv, _ = compute_papo_advantage(scores, mask, np.array(["x", "x", "y"], dtype=object))
    assert torch.isfinite(adv).all() and not adv.any()


def test_invalid_rows_change_nothing_for_the_valid_ones():
    groups = np.array([0, 0, 0, 1, 1, 1])
    scores, mask = outcome([1.0, -1.0, 1.0, -1.0, 1.0, 1.0], [4, 4, 4, 4, 4, 4])
    masked = mask.clone()
    masked[[2, 5]] = 0  # rows 2 and 5 become malformed: their rewards must not move the statistics
    got, _ = compute_papo_advantage(scores, masked, groups)
    keep = [0, 1, 3, 4]
    want, _ = compute_papo_advantage(scores[keep], mask[keep], groups[keep])
    torch.testing.assert_close(got[keep], want, rtol=0, atol=0)
    assert not got[[2, 5]].any()


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        compute_papo_advantage(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="one uid per row"):
        compute_papo_advantage(torch.zeros(2, 3), torch.ones(2, 3), np.array([0]))


def test_loss_is_on_policy_token_mean_without_clipping():
    adv = torch.tensor([[2.0, 2.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    log_prob = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, -3.0, -0.7]], requires_grad=True)
    old = log_prob.detach() - 5.0  # a stale old policy must not clip or change anything
    config = SimpleNamespace(global_batch_info={})
    loss, metrics = compute_papo_policy_loss(old, log_prob, adv, mask, "token-mean", config)
    # ratio == 1: loss = -(2 + 2 - 1 - 1 - 1) / 5 tokens = -0.2; d loss / d logp = -A * mask / 5
    assert loss.item() == pytest.approx(-0.2, abs=1e-7)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -adv * mask / 5, rtol=0, atol=1e-7)
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/ppo_kl"] == pytest.approx(-5.0)


def test_loss_of_an_all_invalid_batch_is_zero_with_zero_gradient():
    log_prob = torch.zeros(2, 3, requires_grad=True)
    loss, _ = compute_papo_policy_loss(log_prob.detach(), log_prob, torch.zeros(2, 3), torch.zeros(2, 3),
                                       "token-mean", SimpleNamespace(global_batch_info={"batch_num_tokens": 0}))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(log_prob.grad).all() and not log_prob.grad.any()
