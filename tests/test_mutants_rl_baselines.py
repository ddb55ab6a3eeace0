"""metalib.rl.baselines: behaviour that `make mutants MODULES=rl/baselines.py` showed untested by
tests/test_rl_baselines.py: each policy's rule on hand-picked states, the counts a policy is shown,
the Beta sampler's construction, the DP's bounds and error messages. References are plain Python
(per-row loops, closed forms, the unsorted recursion of tests/test_rl_baselines.py).
"""
from __future__ import annotations

import math

import pytest
import torch

from metalib.rl import baselines as bl
from metalib.rl.envs import BernoulliBandit
from test_rl_baselines import _plain_value  # the unsorted, unmemoised reference recursion


def test_tie_break_treats_exact_float64_ties_as_ties():
    """Two equal float64 maxima are both chosen (about half each); the lower score never."""
    scores = torch.tensor([[0.3, 0.7, 0.7]], dtype=torch.float64).expand(4000, 3)
    arms = bl._tie_break(scores, torch.Generator().manual_seed(0))
    counts = torch.bincount(arms, minlength=3)
    assert counts[0] == 0 and abs(counts[1].item() / 4000 - 0.5) < 0.05, counts


def test_greedy_takes_the_highest_posterior_mean():
    """(s+1)/(s+f+2): an untried arm (1/2) beats 3 wins in 7 pulls (4/9), though 3 wins and 4 losses
    would win under (s+1)/(s+f+3) (1/3 against 4/10)."""
    s = torch.tensor([[0.0, 3.0]])
    f = torch.tensor([[0.0, 4.0]])
    assert bl._greedy(s, f, 7, torch.Generator().manual_seed(0)).item() == 0


def test_eps_greedy_explores_a_tenth_of_the_time():
    """With one clearly best arm of three, a uniformly random arm with probability 0.1 misses it
    with probability 0.1 * 2/3."""
    B = 30000
    s = torch.tensor([[5.0, 0.0, 0.0]]).expand(B, 3)
    f = torch.tensor([[0.0, 5.0, 5.0]]).expand(B, 3)
    arms = bl._eps_greedy(s, f, 15, torch.Generator().manual_seed(0))
    miss = (arms != 0).float().mean().item()
    assert abs(miss - 0.1 * 2 / 3) < 0.008, miss  # s.e. 0.0014


def _ucb1_by_hand(s: list[int], f: list[int], t: int) -> set[int]:
    """The arms UCB1 may pull (Auer et al. 2002): an untried arm, else argmax mean + sqrt(2 ln t / n)."""
    pulls = [a + b for a, b in zip(s, f)]
    if 0 in pulls:
        return {i for i, n in enumerate(pulls) if n == 0}
    score = [a / n + math.sqrt(2 * math.log(t) / n) for a, n in zip(s, pulls)]
    return {i for i, v in enumerate(score) if v >= max(score) - 1e-9}


def test_ucb1_matches_the_rule_by_hand_on_random_states():
    """Random states (t = the pulls so far), many with once-pulled arms: every choice is UCB1's."""
    g = torch.Generator().manual_seed(0)
    B, k = 400, 4
    s = torch.randint(0, 5, (B, k), generator=g).double()
    f = torch.randint(0, 5, (B, k), generator=g).double()
    f[s + f == 0] = 1.0  # every arm tried once: the scores decide, not the "untried first" rule
    f[:50, 0], s[:50, 0] = 1.0, 0.0  # rows whose arm 0 was pulled once, and lost
    f[50:100, 1], s[50:100, 1] = 0.0, 1.0  # ... and won once
    for r in range(B):
        t = int((s[r] + f[r]).sum())
        arm = bl._ucb1(s[r:r + 1], f[r:r + 1], t, g).item()
        assert arm in _ucb1_by_hand(s[r].int().tolist(), f[r].int().tolist(), t), (r, s[r], f[r])
    # one win in one pull (mean 1) against two in two: 1 + sqrt(2 ln 3) = 2.48 beats 1 + sqrt(ln 3) = 2.05
    once = bl._ucb1(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), 3, g)
    assert once.item() == 0
    untried = bl._ucb1(torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]), 4, g)
    assert untried.item() == 1


def test_thompson_samples_each_arms_beta_posterior():
    """Arm 0 with one win (Beta(2, 1)) against an untried arm (Beta(1, 1)): P(X > U) = E[X] = 2/3."""
    B = 40000
    s = torch.tensor([[1.0, 0.0]]).expand(B, 2)
    f = torch.zeros(B, 2)
    arms = bl._thompson(s, f, 1, torch.Generator().manual_seed(0))
    p0 = (arms == 0).float().mean().item()
    assert abs(p0 - 2 / 3) < 0.012, p0  # s.e. 0.0024; Beta(3, 1) vs Beta(2, 1) gives 0.6, Beta(2, 2) vs Beta(1, 2) 0.7


def test_beta_sample_with_max_count_sums_the_first_a_of_m_log_uniforms():
    """The construction by hand: u = rand(2, ..., m) from the generator, G_a = -sum_{j<a} log(1 - u[0, .., j]),
    G_b likewise from u[1], sample = G_a / (G_a + G_b); ``max_count`` fixes m whatever the counts."""
    a = torch.tensor([[1.0, 3.0], [2.0, 1.0]])
    b = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    x = bl.beta_sample(a, b, torch.Generator().manual_seed(7), max_count=6)
    u = torch.rand(2, 2, 2, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float32).double()
    for i in range(2):
        for j in range(2):
            ga = -sum(math.log1p(-u[0, i, j, l].item()) for l in range(int(a[i, j])))
            gb = -sum(math.log1p(-u[1, i, j, l].item()) for l in range(int(b[i, j])))
            assert x[i, j].item() == pytest.approx(ga / (ga + gb), rel=1e-5)


def test_run_bandit_policy_shows_the_policy_its_counts_so_far():
    """A callable policy sees t and the per-arm successes / failures of the pulls before t."""
    env = BernoulliBandit(3, 8)
    tasks = env.sample_tasks(64, torch.Generator().manual_seed(0))
    seen = []

    def cycle(s, f, t, g):
        seen.append((s.clone(), f.clone(), t))
        return torch.full((s.shape[0],), t % 3, dtype=torch.long)

    rewards, actions = bl.run_bandit_policy(cycle, env, tasks, torch.Generator().manual_seed(1))
    assert [t for _, _, t in seen] == list(range(8))
    assert (actions == torch.arange(8) % 3).all()
    for t, (s, f, _) in enumerate(seen):
        for arm in range(3):
            pulled = actions[:, :t] == arm
            torch.testing.assert_close(s[:, arm], (rewards[:, :t] * pulled).sum(1))
            torch.testing.assert_close(f[:, arm], ((1 - rewards[:, :t]) * pulled).sum(1))


def test_bayes_optimal_value_of_one_arm_and_of_no_pulls():
    """One arm: every pull pays 1/2 in expectation (uniform prior), so n/2; no pulls: 0."""
    assert bl.bayes_optimal_value(1, 6) == pytest.approx(3.0, abs=1e-12)
    assert bl.bayes_optimal_value(3, 0) == 0.0 and bl.bayes_optimal_value(1, 0) == 0.0


def test_bayes_optimal_value_rejects_bad_sizes_with_the_rule():
    for k, n in ((0, 5), (2, -1), (0, -1)):
        with pytest.raises(ValueError, match=rf"^need k >= 1 arms and n >= 0 pulls, got k={k}, n={n}$"):
            bl.bayes_optimal_value(k, n)


def test_bayes_optimal_value_enumerates_up_to_thirty_pulls(monkeypatch):
    """n = 30 is the largest horizon of the sorted DP (k > 2); 31 is refused with the way out."""
    monkeypatch.setattr(bl, "_value_sorted", lambda state, remaining: float(remaining))  # skip the large DP
    assert bl.bayes_optimal_value(3, 30) == 30.0
    with pytest.raises(ValueError, match=r"^k=3, n=31: the Bayes-optimal DP over sorted \(s, f\) states is too "
                                         r"large; use n <= 30 \(two arms: any n\)$"):
        bl.bayes_optimal_value(3, 31)


@pytest.mark.parametrize("s,f,n", [([2, 0, 1], [1, 1, 0], 8), ([1, 0, 2], [2, 1, 0], 7)])
def test_bayes_q_values_match_the_plain_recursion(s, f, n):
    """Q(arm) = p (1 + V(win)) + (1 - p) V(lose) with p = (s+1)/(s+f+2), from the unsorted recursion;
    the second state has one pull left, where Q is just the posterior mean."""
    state = [list(x) for x in zip(s, f)]
    remaining = n - sum(s) - sum(f)
    want = []
    for i, (si, fi) in enumerate(zip(s, f)):
        p = (si + 1) / (si + fi + 2)
        win = [tuple(x) for x in state[:i]] + [(si + 1, fi)] + [tuple(x) for x in state[i + 1:]]
        lose = [tuple(x) for x in state[:i]] + [(si, fi + 1)] + [tuple(x) for x in state[i + 1:]]
        want.append(p * (1 + _plain_value(win, remaining - 1)) + (1 - p) * _plain_value(lose, remaining - 1))
    assert bl.bayes_optimal_q(s, f, n) == pytest.approx(want, abs=1e-12)
    if remaining == 1:
        assert want == pytest.approx([(si + 1) / (si + fi + 2) for si, fi in zip(s, f)], abs=1e-12)


def test_bayes_q_says_how_many_pulls_were_used():
    with pytest.raises(ValueError, match=r"^no pulls left: the counts already sum to 10 of n=10$"):
        bl.bayes_optimal_q([3, 2], [4, 1], 10)
    with pytest.raises(ValueError, match=r"^no pulls left: the counts already sum to 12 of n=10$"):
        bl.bayes_optimal_q([3, 2], [4, 3], 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the policies draw on the tasks' device")
@pytest.mark.parametrize("policy", list(bl.BANDIT_POLICIES))
def test_policies_play_on_the_tasks_device(policy):
    """Every random draw lives on the tasks' device (a CUDA generator cannot fill a CPU tensor)."""
    env = BernoulliBandit(3, 6)
    gen = torch.Generator(device="cuda").manual_seed(0)
    tasks = env.sample_tasks(32, gen, device="cuda")
    rewards, actions = bl.run_bandit_policy(policy, env, tasks, gen)
    assert rewards.device.type == actions.device.type == "cuda" and actions.shape == (32, 6)
