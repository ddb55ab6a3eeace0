"""Tests of metalib.rl.nav2d and MAML for RL (metalib.rl.maml_rl, maml_rl_train): notebook 08."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metalib import TrainConfig
from metalib.rl.maml_rl import (GaussianMLPPolicy, Trajectories, adapt, adapt_loop, advantages, discounted_returns,
                                inner_loss, linear_baseline, outer_loss, sample_trajectories)
from metalib.rl.maml_rl_train import (MAMLRLConfig, evaluate_adaptation, load_maml_policy, meta_loss, sample_stages,
                                      save_maml_policy, train_maml_rl)
from metalib.rl.nav2d import STAY_AT_ORIGIN, Nav2D, oracle_action, play

ENV = Nav2D()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small matrices in a 100-step loop: one thread is 10-20x faster than two on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return x.mean().item(), (x.std() / math.sqrt(x.numel())).item()


# ---------------------------------------------------------------- environment

def test_step_clips_actions_and_rewards_the_new_position():
    goals = torch.tensor([[0.3, -0.2], [0.0, 0.0]])
    pos, obs = ENV.reset(goals)
    assert torch.equal(pos, torch.zeros(2, 2)) and torch.equal(obs, pos)
    pos, obs, r = ENV.step(goals, pos, torch.tensor([[5.0, -0.05], [-0.02, -3.0]]))
    torch.testing.assert_close(pos, torch.tensor([[0.1, -0.05], [-0.02, -0.1]]))
    torch.testing.assert_close(r, -torch.tensor([math.hypot(0.2, 0.15), math.hypot(0.02, 0.1)]))
    with pytest.raises(ValueError, match="max_action > 0"):
        Nav2D(max_action=0)


def test_goals_uniform_on_the_square_and_reproducible():
    g = ENV.sample_tasks(20000, torch.Generator().manual_seed(0))
    assert g.shape == (20000, 2) and g.abs().max() <= 0.5
    # U[-1/2, 1/2]: mean 0, variance 1/12 per coordinate (4 standard errors)
    assert g.mean(0).abs().max() < 4 * math.sqrt(1 / 12 / 20000)
    torch.testing.assert_close(g.var(0), torch.full((2,), 1 / 12), atol=4 * 0.0745 / math.sqrt(20000) * 2, rtol=0)
    assert torch.equal(g[:5], ENV.sample_tasks(5, torch.Generator().manual_seed(0)))


def test_reference_values_of_the_issue():
    """Stay at origin ≈ −38.3 (exact: −100 E‖g‖), oracle ≈ −0.5, random N(0, 1) actions ≈ −90."""
    n = 4000
    goals = ENV.sample_tasks(n, torch.Generator().manual_seed(1))
    assert abs(STAY_AT_ORIGIN + 38.26) < 0.005
    m, se = _mean_se(play(ENV, goals, torch.zeros_like).sum(1))
    assert abs(m - STAY_AT_ORIGIN) < 4 * se, f"stay at origin: {m:.2f} ± {se:.2f}, expected {STAY_AT_ORIGIN:.2f}"
    # oracle: its expectation by a midpoint rule on a 200 x 200 grid of goals, then Monte Carlo against it
    c = (torch.arange(200) + 0.5) / 200 - 0.5
    grid = torch.cartesian_prod(c, c)
    exact = play(ENV, grid, lambda p: oracle_action(ENV, grid, p)).sum(1).double().mean().item()
    assert abs(exact + 0.5) < 0.02, f"oracle expectation {exact:.4f}, the issue says about -0.5"
    m, se = _mean_se(play(ENV, goals, lambda p: oracle_action(ENV, goals, p)).sum(1))
    assert abs(m - exact) < 4 * se, f"oracle: {m:.4f} ± {se:.4f} vs {exact:.4f}"
    g = torch.Generator().manual_seed(2)
    m, se = _mean_se(play(ENV, goals, lambda p: torch.randn(p.shape, generator=g)).sum(1))
    # measured -91.0 ± 0.1 over 100,000 goals; the issue's "about -90" is a rounded value
    assert abs(m + 90) < 1.5 + 4 * se, f"random actions: {m:.2f} ± {se:.2f}"


# ---------------------------------------------------------------- policy and trajectories

def _setup(b=3, k=4, hidden=(16, 16), std=0.3, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    pol = GaussianMLPPolicy(hidden=hidden, init_std=std).to(dtype)
    g = torch.Generator().manual_seed(seed)
    goals = ENV.sample_tasks(b, g).to(dtype)
    theta = {n: p.detach().requires_grad_() for n, p in pol.params().items()}
    traj = sample_trajectories(pol, theta, ENV, goals, k, generator=g)
    return pol, theta, goals, traj


def test_log_prob_matches_torch_distributions():
    pol, theta, goals, traj = _setup()
    obs, act = traj.obs.flatten(1, 2), traj.actions.flatten(1, 2)  # (B, K*T, 2)
    ref = torch.distributions.Normal(pol.mean(theta, obs), theta["log_std"].exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(pol.log_prob(theta, obs, act), ref)


def test_trajectories_replay_in_the_environment_and_are_reproducible():
    pol, theta, goals, traj = _setup(b=2, k=3)
    assert traj.obs.shape == (2, 3, 100, 2) and traj.rewards.shape == (2, 3, 100)
    acts = iter(traj.actions.flatten(0, 1).unbind(1))  # (B*K, 2) per step
    rewards = play(ENV, goals.repeat_interleave(3, 0), lambda p: next(acts))
    torch.testing.assert_close(rewards.view(2, 3, 100), traj.rewards)
    a = sample_trajectories(pol, theta, ENV, goals, 3, generator=torch.Generator().manual_seed(5))
    b = sample_trajectories(pol, theta, ENV, goals, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.actions, b.actions)


def test_per_task_rollout_matches_a_loop_over_tasks():
    pol, theta, goals, traj = _setup(b=3, k=2)
    adapted = adapt(pol, theta, traj, advantages(traj), 0.5, create_graph=False)  # different params per task
    batched = sample_trajectories(pol, adapted, ENV, goals, 2, greedy=True)
    for i in range(3):
        one = sample_trajectories(pol, {n: v[i] for n, v in adapted.items()}, ENV, goals[i:i + 1], 2, greedy=True)
        torch.testing.assert_close(batched.rewards[i], one.rewards[0])
        torch.testing.assert_close(batched.obs[i], one.obs[0])


# ---------------------------------------------------------------- returns, baseline, advantages

def test_discounted_returns_match_the_definition():
    r = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = discounted_returns(r, 0.9)
    ref = torch.stack([sum(0.9 ** (l - t) * r[..., l] for l in range(t, 7)) for t in range(7)], -1)
    torch.testing.assert_close(got, ref)


def test_linear_baseline_is_a_per_task_least_squares_fit():
    pol, theta, goals, traj = _setup(b=3, k=4)
    g = discounted_returns(traj.rewards, 0.99)
    got = linear_baseline(traj.obs, g, reg=0.0)
    for i in range(3):  # plain lstsq on task i's own K*T rows
        o = traj.obs[i].reshape(-1, 2)
        t = (torch.arange(100, dtype=o.dtype) / 100).repeat(4)[:, None]
        x = torch.cat([o, o * o, t, t * t, t ** 3, torch.ones_like(t)], 1)
        w = torch.linalg.lstsq(x, g[i].reshape(-1, 1)).solution
        torch.testing.assert_close(got[i].reshape(-1, 1), x @ w, atol=1e-6, rtol=1e-6)
    resid_lin = (g - got).pow(2).mean()
    resid_mean = (g - g.mean(1, keepdim=True)).pow(2).mean()
    assert resid_lin < resid_mean, "the linear baseline should explain the returns better than a per-step mean"


def test_advantages_normalised_per_task_and_options_checked():
    pol, theta, goals, traj = _setup()
    for base in ("linear", "mean", "none"):
        a = advantages(traj, baseline=base).flatten(1)
        torch.testing.assert_close(a.mean(1), torch.zeros(3, dtype=a.dtype), atol=1e-9, rtol=0)
        torch.testing.assert_close(a.std(1), torch.ones(3, dtype=a.dtype))
    raw = advantages(traj, gamma=1.0, baseline="none", normalize=False)
    torch.testing.assert_close(raw[..., 0], traj.returns())
    with pytest.raises(ValueError, match="baseline must be"):
        advantages(traj, baseline="value")


# ---------------------------------------------------------------- the inner step

def test_vectorised_adapt_matches_maml_adapt_per_task_including_second_order():
    pol, theta, goals, traj = _setup(b=3, k=4)
    adv = advantages(traj)
    fast, ref = adapt(pol, theta, traj, adv, 0.3), adapt_loop(pol, theta, traj, adv, 0.3)
    for n in fast:
        torch.testing.assert_close(fast[n], ref[n], msg=n)
    w = {n: torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(len(n))) for n, v in fast.items()}
    gf = torch.autograd.grad(sum((fast[n] * w[n]).sum() for n in w), list(theta.values()))
    gr = torch.autograd.grad(sum((ref[n] * w[n]).sum() for n in w), list(theta.values()))
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b)
    # a second step from per-task parameters
    fast2, ref2 = adapt(pol, fast, traj, adv, 0.3), adapt_loop(pol, ref, traj, adv, 0.3)
    for n in fast2:
        torch.testing.assert_close(fast2[n], ref2[n], msg=n)
    nograd = adapt(pol, theta, traj, adv, 0.3, create_graph=False)
    assert not any(v.requires_grad for v in nograd.values())
    for n in nograd:
        torch.testing.assert_close(nograd[n], fast[n].detach())


def test_inner_step_is_the_policy_gradient_of_the_inner_loss():
    pol, theta, goals, traj = _setup(b=2)
    adv = advantages(traj)
    new = adapt(pol, theta, traj, adv, 0.7, create_graph=False)
    for i in range(2):
        one = {n: v.detach().clone().requires_grad_() for n, v in theta.items()}
        loss = inner_loss(pol, {n: v.expand(1, *v.shape) for n, v in one.items()},
                          Trajectories(*(x[i:i + 1] for x in traj)), adv[i:i + 1]).sum()
        grads = dict(zip(one, torch.autograd.grad(loss, list(one.values()))))
        for n in one:
            torch.testing.assert_close(new[n][i], one[n] - 0.7 * grads[n])


def test_one_inner_step_turns_the_mean_action_towards_the_goal():
    torch.manual_seed(0)
    pol = GaussianMLPPolicy(hidden=(32, 32), init_std=0.1)
    with torch.no_grad():
        pol.layers[-1].weight.mul_(0.01), pol.layers[-1].bias.zero_()  # start: mean action ≈ 0 everywhere
    theta = {n: p.detach() for n, p in pol.params().items()}
    goals = torch.tensor([[0.4, 0.3], [-0.35, 0.2], [0.1, -0.45], [-0.3, -0.3]])
    traj = sample_trajectories(pol, theta, ENV, goals, 20, generator=torch.Generator().manual_seed(1))
    new = adapt(pol, theta, traj, advantages(traj), 0.01, create_graph=False)
    before = pol.mean(theta, torch.zeros(1, 1, 2))[0, 0]
    after = pol.mean(new, torch.zeros(4, 1, 2))[:, 0]  # (4, 2) mean action at the origin
    cos = torch.nn.functional.cosine_similarity(after - before, goals, dim=1)
    assert (cos > 0.7).all(), f"the inner step should move the mean action towards each goal: cosines {cos.tolist()}"


def test_ppo_surrogate_has_the_policy_gradient_at_ratio_one():
    pol, theta, goals, traj = _setup(b=2)
    adv = advantages(traj)
    B, K, T, D = traj.obs.shape
    old = pol.log_prob(theta, traj.obs.reshape(B, K * T, D), traj.actions.reshape(B, K * T, 2)).detach()
    g_pg = torch.autograd.grad(outer_loss(pol, theta, traj, adv), list(theta.values()))
    g_ppo = torch.autograd.grad(outer_loss(pol, theta, traj, adv, old), list(theta.values()))
    for a, b in zip(g_pg, g_ppo):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- training, evaluation, checkpoints

SMALL = MAMLRLConfig(hidden=(16, 16), trajectories=3, train=TrainConfig(steps=2, meta_batch=2, lr=1e-3, eval_every=0))


@pytest.mark.parametrize("changes", [{}, {"outer": "ppo", "ppo_epochs": 2}, {"inner_steps": 0}, {"first_order": True},
                                     {"inner_steps": 2}])
def test_training_runs_is_reproducible_and_changes_the_weights(changes):
    cfg = dataclasses.replace(SMALL, **changes)
    a, hist = train_maml_rl(cfg, progress=False)
    b, _ = train_maml_rl(cfg, progress=False)
    assert len(hist.train) == 2 and {"pre", "post", "std"} <= set(hist.train[0])
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"{n} differs between two runs with the same seed"
    torch.manual_seed(cfg.seed)
    fresh = GaussianMLPPolicy(hidden=cfg.hidden, init_std=cfg.init_std)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), fresh.parameters())), "training changed nothing"


def _meta_gradient_by_hand(policy, stages, cfg) -> list[torch.Tensor]:
    """The meta-gradient of `meta_loss` built from `adapt_loop` (metalib.maml.adapt, one task at a time):
    second order through every inner step, or first order: the per-task gradients at θ'_i, summed."""
    theta = policy.params()
    adapted, losses, last = theta, [], len(stages) - 1
    for s, (traj, adv, _) in enumerate(stages):
        if s == last or (cfg.loss_every_step and s > 0):
            if cfg.first_order and s > 0:
                leaf = {n: v.detach().requires_grad_() for n, v in adapted.items()}
                g = torch.autograd.grad(outer_loss(policy, leaf, traj, adv), list(leaf.values()))
                losses.append([gi.sum(0) for gi in g])  # d theta'_i / d theta = I for every task i
            else:
                losses.append(list(torch.autograd.grad(outer_loss(policy, adapted, traj, adv), list(theta.values()),
                                                       retain_graph=True)))
        if s < last:
            adapted = adapt_loop(policy, adapted, traj, adv, cfg.inner_lr, first_order=cfg.first_order)
    return [torch.stack(gs).mean(0) for gs in zip(*losses)]


@pytest.mark.parametrize("inner_steps,every", [(1, False), (2, True)])
def test_first_order_meta_gradient_drops_exactly_the_second_order_terms(inner_steps, every):
    """FOMAML (first_order=True) must give the first-order gradient, MAML the second-order one, and the two differ."""
    grads = {}
    for first_order in (False, True):
        cfg = dataclasses.replace(SMALL, inner_steps=inner_steps, loss_every_step=every, first_order=first_order,
                                  inner_lr=0.3)
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(hidden=cfg.hidden, init_std=cfg.init_std)
        stages = sample_stages(policy, ENV, cfg, 3, torch.Generator().manual_seed(1))
        loss, _ = meta_loss(policy, stages, cfg)
        got = torch.autograd.grad(loss, list(policy.params().values()))
        want = _meta_gradient_by_hand(policy, stages, cfg)
        for n, a, b in zip(policy.params(), got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"first_order={first_order}: d loss / d {n}")
        grads[first_order] = torch.cat([g.flatten() for g in got])
    gap = ((grads[True] - grads[False]).norm() / grads[False].norm()).item()
    assert gap > 1e-2, f"first- and second-order meta-gradients should differ here, relative gap {gap:.2e}"


def test_config_is_checked():
    with pytest.raises(ValueError, match="outer must be"):
        train_maml_rl(dataclasses.replace(SMALL, outer="trpo"), progress=False)
    with pytest.raises(ValueError, match="inner_steps must be"):
        train_maml_rl(dataclasses.replace(SMALL, inner_steps=-1), progress=False)


def test_evaluate_adaptation_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    pol = GaussianMLPPolicy(hidden=(16, 16))
    goals = ENV.sample_tasks(5, torch.Generator().manual_seed(0))
    r = evaluate_adaptation(pol, goals, steps=2, k=3, seed=4, chunk=2)
    assert r.shape == (5, 3)
    theta = {n: p.detach() for n, p in pol.params().items()}
    first = sample_trajectories(pol, theta, ENV, goals[:2], 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(r[:2, 0], first.returns().mean(1))  # step 0 = the unadapted policy
    path = save_maml_policy(tmp_path / "p.pt", pol, SMALL, command="test")
    pol2, cfg2, env2, meta = load_maml_policy(path)
    assert cfg2 == SMALL and env2 == ENV and meta["command"] == "test"
    torch.testing.assert_close(evaluate_adaptation(pol2, goals, steps=2, k=3, seed=4, chunk=2), r)


def test_shipped_checkpoint_adapts():
    """The shipped MAML policy: on 40 held-out goals one step gains >= 10 and step 3 beats step 1."""
    policy, cfg, env, meta = load_maml_policy("maml_rl_nav2d.pt")
    assert meta["command"].startswith("python benchmarks/maml_rl.py")
    goals = env.sample_tasks(40, torch.Generator().manual_seed(99))
    r = evaluate_adaptation(policy, goals, steps=3, k=cfg.trajectories, inner_lr=cfg.inner_lr, gamma=cfg.gamma,
                            baseline=cfg.baseline, normalize=cfg.normalize, seed=5)
    m, se = r.mean(0), r.std(0) / 40 ** 0.5
    assert m[1] - m[0] >= 10, f"one step should gain >= 10: {m.tolist()} (s.e. {se.tolist()})"
    assert m[3] > m[1], f"three steps should beat one: {m.tolist()} (s.e. {se.tolist()})"


def test_linear_baseline_survives_identical_trajectories():
    """Straight-line trajectories make the features collinear (s = 0.1 t): the fit must still be finite."""
    t = torch.arange(100, dtype=torch.float32)
    obs = (0.1 * (t + 1))[None, None, :, None].expand(2, 3, 100, 2)  # (B, K, T, 2): every step +0.1
    g = discounted_returns(-torch.ones(2, 3, 100), 0.99)
    b = linear_baseline(obs.contiguous(), g)
    assert torch.isfinite(b).all()
    assert (b - g).abs().max() < 1.0, "the (ridge-regularised) fit should still follow the returns"
