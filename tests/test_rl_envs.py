"""Tests of metalib.rl.envs: batched bandits and GridNavi against plain per-task loops."""
from __future__ import annotations

import pytest
import torch

from metalib.rl.envs import MOVES, BernoulliBandit, DependentBandit, GridNavi


def test_bandit_tasks_and_rewards_match_a_plain_loop():
    env = BernoulliBandit(k=4, n=7)
    p = env.sample_tasks(50, torch.Generator().manual_seed(0))
    assert p.shape == (50, 4) and (p >= 0).all() and (p <= 1).all()
    action = torch.randint(4, (50,), generator=torch.Generator().manual_seed(1))
    state, _ = env.reset(p)
    _, obs, r = env.step(p, state, action, torch.Generator().manual_seed(2))
    u = torch.rand(50, generator=torch.Generator().manual_seed(2))  # the same uniforms, one task at a time
    expected = torch.tensor([float(u[i] < p[i, action[i]]) for i in range(50)])
    assert torch.equal(r, expected)
    assert obs.shape == (50, 0) and env.n_actions == 4 and env.n_episodes == 7 and env.episode_len == 1


def test_bandit_reward_frequency_is_p():
    env = BernoulliBandit(k=2, n=1)
    p = torch.tensor([[0.2, 0.9]]).expand(20000, 2)
    g = torch.Generator().manual_seed(0)
    for arm, prob in ((0, 0.2), (1, 0.9)):
        r = env.step(p, None, torch.full((20000,), arm), g)[2]
        assert abs(r.mean().item() - prob) < 0.01


def test_bandit_expected_reward_matches_a_plain_loop():
    env = BernoulliBandit(k=3, n=6)
    p = env.sample_tasks(8, torch.Generator().manual_seed(0))
    actions = torch.randint(3, (8, 6), generator=torch.Generator().manual_seed(1))  # (B, T)
    loop = torch.tensor([[p[b, actions[b, t]].item() for t in range(6)] for b in range(8)])
    torch.testing.assert_close(env.expected_reward(p, actions), loop)


def test_same_generator_same_tasks():
    for env in (BernoulliBandit(3, 5), DependentBandit(), GridNavi()):
        a = env.sample_tasks(100, torch.Generator().manual_seed(7))
        b = env.sample_tasks(100, torch.Generator().manual_seed(7))
        c = env.sample_tasks(100, torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_dependent_bandit_arms_sum_to_one():
    p = DependentBandit().sample_tasks(1000, torch.Generator().manual_seed(0))
    assert p.shape == (1000, 2)
    torch.testing.assert_close(p.sum(1), torch.ones(1000))
    with pytest.raises(ValueError, match="exactly 2 arms"):
        DependentBandit(k=3)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="k=1"):
        BernoulliBandit(k=1, n=5)
    with pytest.raises(ValueError, match="size >= 3"):
        GridNavi(size=2)


def test_gridnavi_goals_avoid_the_start_and_cover_the_rest():
    env = GridNavi()
    goals = env.sample_tasks(20000, torch.Generator().manual_seed(0))
    x, y = goals % 5, goals // 5
    assert not ((x <= 1) & (y <= 1)).any(), "goals must not be within one step of the start"
    counts = torch.bincount(goals, minlength=25)
    assert (counts > 0).sum() == 21 and counts[counts > 0].min() > 800  # uniform over 21 cells (~952 each)


def _plain_gridnavi_step(pos, action, goal, size=5):
    dx, dy = MOVES[action].tolist()
    nx, ny = min(max(pos[0] + dx, 0), size - 1), min(max(pos[1] + dy, 0), size - 1)
    return (nx, ny), (1.0 if ny * size + nx == goal else -0.1)


def test_gridnavi_step_matches_a_plain_loop():
    env = GridNavi()
    g = torch.Generator().manual_seed(3)
    goals = env.sample_tasks(64, g)
    state, obs = env.reset(goals)
    assert torch.equal(state, torch.zeros(64, 2, dtype=torch.long)) and torch.equal(obs.argmax(1), torch.zeros(64).long())
    plain = [(0, 0)] * 64
    for _ in range(40):
        action = torch.randint(5, (64,), generator=g)
        state, obs, r = env.step(goals, state, action)
        for i in range(64):
            plain[i], ri = _plain_gridnavi_step(plain[i], int(action[i]), int(goals[i]))
            assert tuple(state[i].tolist()) == plain[i] and abs(r[i].item() - ri) < 1e-6
            assert obs[i].argmax().item() == plain[i][1] * 5 + plain[i][0] and obs[i].sum() == 1
