"""Bandit baselines for RL²: hand-designed policies and the exact Bayes-optimal value.

Batched policies over B bandit tasks (no Python loop over tasks), all acting on the per-arm
counts of successes s and failures f:

* ``random``, ``greedy`` (highest posterior mean (s+1)/(s+f+2), ties broken at random),
  ``eps_greedy`` (greedy, but a uniformly random arm with probability 0.1);
* ``ucb1`` (Auer et al. 2002: every arm once, then the mean plus sqrt(2 ln t / n_a));
* ``thompson`` (Thompson 1933: pull the arm whose Beta(1+s, 1+f) posterior sample is largest).

`bayes_optimal_value(k, n)` is the expected total reward of the Bayes-optimal policy with
independent Beta(1, 1) priors, by dynamic programming over the per-arm (s, f) counts: the value
of a state is max over arms of p_a (1 + V(s_a + 1)) + (1 - p_a) V(f_a + 1) with the posterior mean
p_a = (s_a + 1) / (s_a + f_a + 2). Arms are exchangeable, so a state is the *sorted* tuple of
(s, f) pairs (memoised); two arms use a vectorised backward induction over (s1, f1, s2) layers.
This is the value the RL² paper's Gittins-index row approximates (Duan et al. 2016, Table 1).

Taught in notebook 07 (meta-RL with RL²).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from .envs import BernoulliBandit

__all__ = ["BANDIT_POLICIES", "run_bandit_policy", "beta_sample", "bayes_optimal_value",
           "bayes_optimal_q", "PAPER_TABLE1"]

# Duan et al. 2016 (RL²), Table 1, k=5 arms, n=10 pulls: mean total reward.
PAPER_TABLE1 = {"RL² (paper)": 6.7, "Gittins (paper)": 6.6, "Thompson (paper)": 5.7}


def _tie_break(scores: torch.Tensor, generator) -> torch.Tensor:
    """Argmax over the last axis with ties broken uniformly at random."""
    noise = torch.rand(scores.shape, generator=generator, device=scores.device)
    best = scores >= scores.max(-1, keepdim=True).values - 1e-12
    return torch.where(best, noise, -1.0).argmax(-1)


def beta_sample(a: torch.Tensor, b: torch.Tensor, generator=None, max_count: int | None = None) -> torch.Tensor:
    """Beta(a, b) samples for *integer* a, b >= 1, drawn from ``generator`` only.

    Uses Gamma(m) = -sum of m log-uniforms and Beta(a, b) = G_a / (G_a + G_b).
    """
    m = int(max_count if max_count is not None else max(a.max(), b.max()))
    u = torch.rand(2, *a.shape, m, generator=generator, device=a.device)
    g = (-torch.log1p(-u)).cumsum(-1)  # (2, ..., m): Gamma(1..m) samples
    ga = g[0].gather(-1, (a.long() - 1).unsqueeze(-1)).squeeze(-1)
    gb = g[1].gather(-1, (b.long() - 1).unsqueeze(-1)).squeeze(-1)
    return ga / (ga + gb)


def _random(s, f, t, g):
    return torch.randint(s.shape[1], (s.shape[0],), generator=g, device=s.device)


def _greedy(s, f, t, g):
    return _tie_break((s + 1) / (s + f + 2), g)


def _eps_greedy(s, f, t, g, eps: float = 0.1):
    explore = torch.rand(s.shape[0], generator=g, device=s.device) < eps
    return torch.where(explore, _random(s, f, t, g), _greedy(s, f, t, g))


def _ucb1(s, f, t, g):
    pulls = s + f
    bonus = torch.sqrt(2 * math.log(max(t, 1)) / pulls.clamp_min(1))
    score = torch.where(pulls == 0, torch.inf, s / pulls.clamp_min(1) + bonus)
    return _tie_break(score, g)


def _thompson(s, f, t, g):
    return _tie_break(beta_sample(s + 1, f + 1, g), g)


BANDIT_POLICIES: dict[str, Callable] = {"random": _random, "greedy": _greedy, "eps-greedy (0.1)": _eps_greedy,
                                        "UCB1": _ucb1, "Thompson": _thompson}


def run_bandit_policy(policy: str | Callable, env: BernoulliBandit, tasks: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Play ``policy`` on B bandit tasks for ``env.n`` pulls.

    Args:
        policy: a name in `BANDIT_POLICIES` or ``fn(successes, failures, t, generator) -> arms (B,)``
            with counts (B, k) and t the number of pulls so far.
        env: the bandit; ``tasks`` its arm probabilities (B, k).
        generator: the only source of randomness (rewards and the policy's own).

    Returns:
        (rewards (B, n), actions (B, n)).
    """
    fn = BANDIT_POLICIES[policy] if isinstance(policy, str) else policy
    s = torch.zeros_like(tasks)
    f = torch.zeros_like(tasks)
    rewards, actions = [], []
    for t in range(env.n):
        a = fn(s, f, t, generator)
        _, _, r = env.step(tasks, None, a, generator)
        onehot = torch.nn.functional.one_hot(a, env.k).to(tasks.dtype)  # (B, k)
        s, f = s + onehot * r[:, None], f + onehot * (1 - r[:, None])
        rewards.append(r), actions.append(a)
    return torch.stack(rewards, 1), torch.stack(actions, 1)


@lru_cache(maxsize=None)
def _value_sorted(state: tuple, remaining: int) -> float:
    if remaining == 0:
        return 0.0
    best = 0.0
    for i, (s, f) in enumerate(state):
        if i and state[i - 1] == (s, f):
            continue  # an identical arm has the same value
        p = (s + 1) / (s + f + 2)
        win = tuple(sorted(state[:i] + ((s + 1, f),) + state[i + 1:]))
        lose = tuple(sorted(state[:i] + ((s, f + 1),) + state[i + 1:]))
        best = max(best, p * (1 + _value_sorted(win, remaining - 1)) + (1 - p) * _value_sorted(lose, remaining - 1))
    return best


def _value_two_arms(n: int) -> float:
    """Backward induction over layers t = s1 + f1 + s2 + f2, vectorised over (s1, f1, s2)."""
    nxt = np.zeros((n + 2, n + 2, n + 2))
    for t in range(n - 1, -1, -1):
        i = np.arange(t + 1)
        s1, f1, s2 = np.meshgrid(i, i, i, indexing="ij")  # (t+1, t+1, t+1)
        f2 = t - s1 - f1 - s2
        p1, p2 = (s1 + 1) / (s1 + f1 + 2), (s2 + 1) / (s2 + np.maximum(f2, 0) + 2)
        base = nxt[: t + 1, : t + 1, : t + 1]  # the state after a failure of arm 2 (f2 + 1)
        q1 = p1 * (1 + nxt[1: t + 2, : t + 1, : t + 1]) + (1 - p1) * nxt[: t + 1, 1: t + 2, : t + 1]
        q2 = p2 * (1 + nxt[: t + 1, : t + 1, 1: t + 2]) + (1 - p2) * base
        cur = np.zeros_like(nxt)
        cur[: t + 1, : t + 1, : t + 1] = np.where(f2 >= 0, np.maximum(q1, q2), 0.0)
        nxt = cur
    return float(nxt[0, 0, 0])


def bayes_optimal_value(k: int, n: int) -> float:
    """Expected total reward of the Bayes-optimal policy on a k-armed Bernoulli bandit, n pulls.

    Independent Beta(1, 1) (uniform) priors on the arm probabilities, i.e. p ~ U[0, 1] as in
    `BernoulliBandit`. k=2, n=10: 6.0218; k=2, n=20: 12.4313; k=5, n=10: 6.6600; k=2, n=100: 64.9184.

    Raises:
        ValueError: k < 1 or n < 0, or a state space too large to enumerate (k > 2 and n > 30).
    """
    if k < 1 or n < 0:
        raise ValueError(f"need k >= 1 arms and n >= 0 pulls, got k={k}, n={n}")
    if k == 2:
        return _value_two_arms(n)
    if n > 30:
        raise ValueError(f"k={k}, n={n}: the Bayes-optimal DP over sorted (s, f) states is too large; "
                         f"use n <= 30 (two arms: any n)")
    return _value_sorted(((0, 0),) * k, n)


def bayes_optimal_q(successes, failures, n: int) -> list[float]:
    """Expected reward-to-go of pulling each arm now, then acting Bayes-optimally (small k, n).

    Args:
        successes, failures: per-arm counts so far (sequences of ints).
        n: total pulls of the task (the counts' sum has been used already).
    """
    state = list(zip((int(v) for v in successes), (int(v) for v in failures)))
    remaining = n - sum(s + f for s, f in state)
    if remaining <= 0:
        raise ValueError(f"no pulls left: the counts already sum to {n - remaining} of n={n}")
    q = []
    for i, (s, f) in enumerate(state):
        p = (s + 1) / (s + f + 2)
        win = tuple(sorted(state[:i] + [(s + 1, f)] + state[i + 1:]))
        lose = tuple(sorted(state[:i] + [(s, f + 1)] + state[i + 1:]))
        q.append(p * (1 + _value_sorted(win, remaining - 1)) + (1 - p) * _value_sorted(lose, remaining - 1))
    return q
