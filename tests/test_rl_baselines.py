"""Tests of metalib.rl.baselines (bandit policies, Bayes-optimal DP) and metalib.rl.searcher."""
from __future__ import annotations

import pytest
import torch

from metalib.rl import baselines as bl
from metalib.rl.envs import BernoulliBandit, GridNavi
from metalib.rl.searcher import Searcher, expected_returns


@pytest.mark.parametrize("k,n,value", [(2, 10, 6.0218), (2, 20, 12.4313), (5, 10, 6.6600), (2, 100, 64.9184)])
def test_bayes_optimal_reference_values(k, n, value):
    assert abs(bl.bayes_optimal_value(k, n) - value) < 1e-4


def _plain_value(state, remaining):
    """Unsorted, unmemoised reference recursion over per-arm (s, f) counts."""
    if remaining == 0:
        return 0.0
    best = 0.0
    for i, (s, f) in enumerate(state):
        p = (s + 1) / (s + f + 2)
        win = state[:i] + [(s + 1, f)] + state[i + 1:]
        lose = state[:i] + [(s, f + 1)] + state[i + 1:]
        best = max(best, p * (1 + _plain_value(win, remaining - 1)) + (1 - p) * _plain_value(lose, remaining - 1))
    return best


@pytest.mark.parametrize("k,n", [(2, 6), (3, 5), (4, 4)])
def test_sorted_dp_matches_plain_recursion(k, n):
    assert abs(bl.bayes_optimal_value(k, n) - _plain_value([(0, 0)] * k, n)) < 1e-12


def test_vectorised_two_arm_dp_matches_sorted_dp():
    for n in range(0, 15):
        assert abs(bl._value_two_arms(n) - bl._value_sorted(((0, 0),) * 2, n)) < 1e-10


def test_bayes_q_values():
    q = bl.bayes_optimal_q([0, 0, 0], [0, 0, 0], 6)
    assert max(q) == pytest.approx(bl.bayes_optimal_value(3, 6)) and q[0] == pytest.approx(q[1])
    q = bl.bayes_optimal_q([3, 0], [0, 3], 10)  # arm 0 won 3 times, arm 1 lost 3 times
    assert q[0] > q[1]
    with pytest.raises(ValueError, match="no pulls left"):
        bl.bayes_optimal_q([5, 5], [0, 0], 10)
    with pytest.raises(ValueError, match="too large"):
        bl.bayes_optimal_value(3, 100)


def test_beta_sample_moments():
    a = torch.full((40000,), 3.0)
    b = torch.full((40000,), 5.0)
    x = bl.beta_sample(a, b, torch.Generator().manual_seed(0))
    assert abs(x.mean() - 3 / 8) < 0.005 and abs(x.var() - 15 / (64 * 9)) < 0.002


def test_policies_run_batched_and_reproducibly():
    env = BernoulliBandit(3, 12)
    p = env.sample_tasks(2000, torch.Generator().manual_seed(0))
    means = {}
    for name in bl.BANDIT_POLICIES:
        r1, a1 = bl.run_bandit_policy(name, env, p, torch.Generator().manual_seed(1))
        r2, a2 = bl.run_bandit_policy(name, env, p, torch.Generator().manual_seed(1))
        assert r1.shape == (2000, 12) and torch.equal(a1, a2) and torch.equal(r1, r2)
        means[name] = r1.sum(1).mean().item()
    assert abs(means["random"] - 6.0) < 0.15  # E[p] * n
    for name in ("greedy", "UCB1", "Thompson"):
        assert means[name] > means["random"] + 0.5, means
    assert max(means.values()) < bl.bayes_optimal_value(3, 12) + 0.1


def test_ucb1_tries_every_arm_first_and_greedy_exploits():
    env = BernoulliBandit(4, 6)
    p = torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand(100, 4)
    _, a = bl.run_bandit_policy("UCB1", env, p, torch.Generator().manual_seed(0))
    assert all(sorted(row[:4].tolist()) == [0, 1, 2, 3] for row in a)
    r, a = bl.run_bandit_policy("greedy", env, p, torch.Generator().manual_seed(0))
    first_win = (a == 2).float().argmax(1)  # once arm 2 paid, greedy keeps pulling it
    for i in range(100):
        assert (a[i, first_win[i]:] == 2).all()


def test_searcher_expected_returns():
    env = GridNavi()
    memory = expected_returns(env, "task")
    torch.testing.assert_close(memory, torch.tensor([4.00, 10.76, 11.07, 11.07], dtype=torch.float64), atol=0.006, rtol=0)
    torch.testing.assert_close(expected_returns(env, "episode"), torch.full((4,), 4.0, dtype=torch.float64), atol=1e-9, rtol=0)
    two = expected_returns(env, "never", n_tasks=2)
    torch.testing.assert_close(two[:4], memory)  # the first task starts with an empty memory
    assert (two[4:] < memory - 0.5).all(), "leaked memory must hurt the second task"
    # exact: sums of multiples of 0.1 over the 21 x 21 goal pairs, so fractions over 4410
    # (3.43 / 6.13 / 6.19 / 6.19; the searcher waits once its leaked memory says it looked everywhere)
    exact = torch.tensor([17640, 47439, 48825, 48825, 15121, 27045, 27309, 27309], dtype=torch.float64) / 4410
    torch.testing.assert_close(two, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(two, _searcher_through_the_batched_env(env), atol=1e-9, rtol=0)


def _searcher_through_the_batched_env(env: GridNavi) -> torch.Tensor:
    """The same average computed another way: every (first goal, second goal) pair at once, moves and
    rewards from the batched GridNavi env (not the searcher's own play_episode), memory never cleared."""
    goals = env.goal_cells()
    first, second = goals.repeat_interleave(len(goals)), goals.repeat(len(goals))  # all 441 pairs
    searchers = [Searcher(env) for _ in first]
    returns = []
    for tasks in (first, second):
        for _ in range(env.n_episodes):
            state, _ = env.reset(tasks)
            for s in searchers:
                s.observe((0, 0), env.step_reward)  # no goal is at the start
            total = torch.zeros(len(tasks), dtype=torch.float64)
            for _ in range(env.episode_len):
                action = torch.tensor([s.act(tuple(p)) for s, p in zip(searchers, state.tolist())])
                state, _, r = env.step(tasks, state, action)
                for s, p, ri in zip(searchers, state.tolist(), r.tolist()):
                    s.observe(tuple(p), ri)
                total += (r.double() * 10).round() / 10  # the env gives float32 rewards: -0.1 exactly
            returns.append(total.mean())
    return torch.stack(returns)


def test_searcher_agrees_with_the_batched_env():
    env = GridNavi()
    goals = env.goal_cells()
    state, _ = env.reset(goals)
    searchers = [Searcher(env) for _ in goals]
    for s, gl in zip(searchers, goals.tolist()):
        s.observe((0, 0), -0.1)
    total_env = torch.zeros(len(goals))
    for _ in range(env.episode_len):
        action = torch.tensor([s.act(tuple(p)) for s, p in zip(searchers, state.tolist())])
        state, _, r = env.step(goals, state, action)
        for s, p, ri in zip(searchers, state.tolist(), r.tolist()):
            s.observe(tuple(p), ri)
        total_env += r
    plain = torch.tensor([Searcher(env).play_episode(g) for g in goals.tolist()])
    torch.testing.assert_close(total_env, plain)
    assert abs(plain.mean().item() - 4.0) < 0.006
