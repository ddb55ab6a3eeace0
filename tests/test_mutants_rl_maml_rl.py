"""metalib.rl.maml_rl: behaviour that `make mutants MODULES=rl/maml_rl.py` showed untested by
tests/test_maml_rl.py: the policy's defaults and layer-by-layer mean (shared and per task), the action
noise, rllab's features (clipping), the ridge retries of the linear baseline, each advantage baseline
before standardisation, the standardisation's epsilon, the inner loss and PPO's clipped surrogate away
from ratio one. References are plain per-task / per-row loops, torch.distributions and float64 solves.
"""
from __future__ import annotations

import math

import pytest
import torch

from metalib.rl import maml_rl as mr
from metalib.rl.maml_rl import GaussianMLPPolicy, Trajectories
from metalib.rl.nav2d import Nav2D

F64 = torch.float64


def _policy(hidden=(5, 4), std=0.7, seed=0, obs_dim=2, action_dim=2) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(obs_dim, action_dim, hidden, init_std=std).to(F64)


def _mlp_by_hand(params: dict, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """The MLP on one task's rows x (N, in) with one task's params, one row at a time."""
    rows = []
    for xi in x:
        h = xi
        for i in range(n_layers):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            h = torch.stack([(w[o] * h).sum() + b[o] for o in range(w.shape[0])])
            if i < n_layers - 1:
                h = torch.clamp(h, min=0.0)
        rows.append(h)
    return torch.stack(rows)


def _random_params(pol: GaussianMLPPolicy, B: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: p.detach() + 0.5 * torch.randn((B, *p.shape), generator=g, dtype=F64) for n, p in pol.params().items()}


def _traj(B=2, K=3, T=4, D=2, A=2, seed=0) -> Trajectories:
    g = torch.Generator().manual_seed(seed)
    return Trajectories(torch.randn(B, K, T, D, generator=g, dtype=F64) * 0.3,
                        torch.randn(B, K, T, A, generator=g, dtype=F64),
                        torch.randn(B, K, T, generator=g, dtype=F64))


# ---------------------------------------------------------------- the policy

def test_policy_defaults_are_the_papers_sizes_and_unit_std():
    """obs 2 -> 100 -> 100 -> action 2, log σ = log 1 = 0; params() is the module's own named parameters."""
    torch.manual_seed(0)
    pol = GaussianMLPPolicy()
    assert [tuple(l.weight.shape) for l in pol.layers] == [(100, 2), (100, 100), (2, 100)]
    assert torch.equal(pol.log_std.detach(), torch.zeros(2))
    p = pol.params()
    assert set(p) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                         "layers.2.weight", "layers.2.bias", "log_std"}
    assert all(p[n] is q for n, q in pol.named_parameters())


def test_policy_sizes_and_initial_std_are_the_arguments():
    pol = GaussianMLPPolicy(3, 1, (6,), init_std=0.25)
    assert [tuple(l.weight.shape) for l in pol.layers] == [(6, 3), (1, 6)]
    torch.testing.assert_close(pol.log_std.detach(), torch.tensor([math.log(0.25)]))


def test_mean_is_the_relu_mlp_row_by_row_with_shared_and_per_task_params():
    """A linear output (negative means survive), ReLU between layers; obs_dim 3 != action_dim 2 != N."""
    pol = _policy(hidden=(5, 4), obs_dim=3)
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    shared = {n: p.detach() for n, p in pol.params().items()}
    got = pol.mean(shared, x)
    assert got.shape == (2, 6, 2) and (got < 0).any()
    for b in range(2):
        torch.testing.assert_close(got[b], _mlp_by_hand(shared, x[b], 3))
    per = _random_params(pol, 2)
    got = pol.mean(per, x)
    for b in range(2):
        torch.testing.assert_close(got[b], _mlp_by_hand({n: v[b] for n, v in per.items()}, x[b], 3))


def test_log_prob_of_per_task_params_matches_torch_distributions_task_by_task():
    """Per-task log σ (B, A) with N = 2 = A rows: a wrong broadcast would still run, but give other values."""
    pol = _policy(action_dim=2)
    per = _random_params(pol, 3)
    g = torch.Generator().manual_seed(2)
    obs, act = torch.randn(3, 2, 2, generator=g, dtype=F64), torch.randn(3, 2, 2, generator=g, dtype=F64)
    got = pol.log_prob(per, obs, act)
    assert got.shape == (3, 2)
    for b in range(3):
        one = {n: v[b] for n, v in per.items()}
        d = torch.distributions.Normal(_mlp_by_hand(one, obs[b], 3), one["log_std"].exp())
        torch.testing.assert_close(got[b], d.log_prob(act[b]).sum(-1))
    assert mr.per_task(per) and not mr.per_task({n: p for n, p in pol.params().items()})


def test_log_std_has_the_documented_shapes():
    """Shared: (A,) as stored; per task (B, A): (B, 1, A), one σ per task for all its rows."""
    pol = _policy()
    shared = {n: p.detach() for n, p in pol.params().items()}
    assert torch.equal(pol.log_std_of(shared), shared["log_std"]) and pol.log_std_of(shared).shape == (2,)
    per = _random_params(pol, 3)
    assert torch.equal(pol.log_std_of(per), per["log_std"].view(3, 1, 2))


def test_returns_are_the_undiscounted_sums_of_rewards():
    traj = _traj()
    ref = torch.tensor([[sum(traj.rewards[b, k].tolist()) for k in range(3)] for b in range(2)], dtype=F64)
    torch.testing.assert_close(traj.returns(), ref)


# ---------------------------------------------------------------- sampling

def _play_by_hand(env, pol, params, goals, k, gen, greedy):
    """The documented sampler, one (task, trajectory) row at a time: a ~ N(mean, σ²), K rows per task."""
    B, A = goals.shape[0], 2
    per = mr.per_task(params)
    obs = torch.zeros(B, k, 2, dtype=F64)
    all_obs, all_act, all_rew = [], [], []
    for _ in range(env.episode_len):
        noise = torch.randn((B, k, A), generator=gen).to(F64)  # ε in torch's default dtype, as the sampler draws it
        act = torch.empty(B, k, A, dtype=F64)
        for b in range(B):
            p = {n: v[b] for n, v in params.items()} if per else params
            m = _mlp_by_hand(p, obs[b], len(pol.layers))
            act[b] = m if greedy else m + p["log_std"].exp() * noise[b]
        new = obs + act.clamp(-env.max_action, env.max_action)
        rew = -(new - goals[:, None, :]).norm(dim=-1)
        all_obs.append(obs), all_act.append(act), all_rew.append(rew)
        obs = new
    return torch.stack(all_obs, 2), torch.stack(all_act, 2), torch.stack(all_rew, 2)


@pytest.mark.parametrize("greedy", [False, True])
@pytest.mark.parametrize("per_task", [False, True])
def test_sampled_trajectories_match_the_documented_sampler(greedy, per_task):
    """Same generator, same draws: obs, actions (mean + σ ε, or the mean) and rewards, row by row."""
    env = Nav2D(horizon=3)
    pol = _policy(hidden=(4,), std=0.3)
    params = _random_params(pol, 2) if per_task else {n: p.detach() for n, p in pol.params().items()}
    params["log_std"] = params["log_std"] + torch.tensor([0.0, -1.0], dtype=F64)  # two different σ
    goals = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=F64)
    ref = _play_by_hand(env, pol, params, goals, 3, torch.Generator().manual_seed(7), greedy)
    kw = {"greedy": True} if greedy else {}
    got = mr.sample_trajectories(pol, params, env, goals, 3, generator=torch.Generator().manual_seed(7), **kw)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- features and the linear baseline

def test_features_clip_the_state_to_plus_minus_ten_and_count_time_in_hundreds():
    """[s, s², t, t², t³, 1] with s clipped to [-10, 10] and t = step / 100, row by row."""
    obs = torch.tensor([-15.0, -10.0, -9.5, 0.5, 9.5, 10.0, 15.0, 2.0], dtype=F64).view(1, 2, 4, 1)
    got = mr._features(obs)
    assert got.shape == (1, 2, 4, 6)
    for k in range(2):
        for t in range(4):
            s = min(max(obs[0, k, t, 0].item(), -10.0), 10.0)
            u = t / 100
            torch.testing.assert_close(got[0, k, t], torch.tensor([s, s * s, u, u * u, u ** 3, 1.0], dtype=F64))


def test_features_are_built_on_the_device_of_the_observations():
    """A "meta" tensor stands in for a GPU: the time features must be made on obs's device, not the CPU."""
    got = mr._features(torch.zeros(2, 3, 4, 2, device="meta"))
    assert got.device.type == "meta" and got.shape == (2, 3, 4, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: on the CPU every tensor is on one device")
def test_linear_baseline_on_a_gpu_matches_the_cpu():
    obs, ret = _baseline_data()
    obs[0, ..., 0] = 0.0  # one singular task: the retry path too
    got = mr.linear_baseline(obs.cuda(), ret.cuda(), reg=0.0)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), mr.linear_baseline(obs, ret, reg=0.0), rtol=1e-7, atol=1e-7)


def test_discounted_returns_of_a_single_step_are_the_rewards():
    """T = 1: G_0 = r_0 (the running sum starts from a zero of the right shape)."""
    r = torch.tensor([[[0.5], [-2.0]]], dtype=F64)
    assert torch.equal(mr.discounted_returns(r, 0.9), r)


def _x(obs_i: torch.Tensor, K: int, T: int) -> torch.Tensor:
    """rllab's features of one task's K*T rows, built independently."""
    o = obs_i.reshape(-1, obs_i.shape[-1]).clamp(-10, 10)
    t = (torch.arange(T, dtype=o.dtype) / 100).repeat(K)[:, None]
    return torch.cat([o, o * o, t, t * t, t ** 3, torch.ones_like(t)], 1)


def _ridge(obs_i, g_i, lam, K, T):
    x = _x(obs_i, K, T)
    w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ g_i.reshape(-1, 1))
    return (x @ w).reshape(K, T)


def _baseline_data(B=2, K=2, T=6):
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(B, K, T, 2, generator=g, dtype=F64) * 0.4 - 0.2
    ret = torch.randn(B, K, T, generator=g, dtype=F64)
    return obs, ret


def test_linear_baseline_defaults_to_rllabs_ridge_of_1e_5():
    """With few rows (K*T = 12) and tiny time features the ridge matters: 1e-5, not 1e-4 nor 1e-6."""
    obs, ret = _baseline_data()
    got = mr.linear_baseline(obs, ret)
    for i in range(2):
        want = _ridge(obs[i], ret[i], 1e-5, 2, 6)
        torch.testing.assert_close(got[i], want, rtol=1e-9, atol=1e-9)
        for other in (1e-4, 1e-6):
            assert (_ridge(obs[i], ret[i], other, 2, 6) - want).abs().max() > 1e-3  # the check can tell them apart


def test_a_singular_fit_is_retried_with_ten_times_1e_8_and_other_tasks_keep_their_fit():
    """reg = 0: task 0 has an all-zero state coordinate (exactly singular normal equations), so its fit is
    redone with ridge max(0, 1e-8) * 10 = 1e-7; task 1 is regular and keeps its exact least-squares fit."""
    obs, ret = _baseline_data()
    obs[0, ..., 0] = 0.0
    got = mr.linear_baseline(obs, ret, reg=0.0)
    torch.testing.assert_close(got[0], _ridge(obs[0], ret[0], 1e-7, 2, 6), rtol=1e-9, atol=1e-9)
    x = _x(obs[1], 2, 6)
    exact = x @ torch.linalg.lstsq(x, ret[1].reshape(-1, 1)).solution
    torch.testing.assert_close(got[1], exact.reshape(2, 6), rtol=1e-7, atol=1e-7)
    for lam in (1e-8, 1e-6):  # the neighbouring ridges give other fits
        assert (_ridge(obs[0], ret[0], lam, 2, 6) - got[0]).abs().max() > 1e-3
    assert (_ridge(obs[1], ret[1], 1e-7, 2, 6) - got[1]).abs().max() > 1e-3


def test_the_ridge_grows_tenfold_per_retry():
    """Returns near the float64 limit: the ridge solves overflow (non-finite) for ridges 1e-7 and 1e-6
    and succeed from 1e-5 on, so with reg = 0 the fit is the one of the third retry, 1e-8 * 10**3."""
    obs, _ = _baseline_data(B=1)
    obs[..., 0] = 0.0
    ret = torch.randn(1, 2, 6, generator=torch.Generator().manual_seed(1), dtype=F64) * 1e307
    x = _x(obs[0], 2, 6)
    finite = []
    for lam in (1e-7, 1e-6, 1e-5):
        w, _ = torch.linalg.solve_ex(x.T @ x + lam * torch.eye(8, dtype=F64), x.T @ ret[0].reshape(-1, 1))
        finite.append(bool(w.isfinite().all()))
    assert finite == [False, False, True]  # the premise
    got = mr.linear_baseline(obs, ret, reg=0.0)
    want = _ridge(obs[0], ret[0], 1e-5, 2, 6)
    assert torch.isfinite(got).all() and torch.isfinite(want).all()
    torch.testing.assert_close(got[0] / 1e300, want / 1e300, rtol=1e-9, atol=0)


def test_a_fit_that_never_succeeds_predicts_zero_and_leaves_the_other_tasks_alone():
    """Task 1's returns hold a NaN: every retry fails and its baseline is 0. Task 0 is solved at the first
    attempt with reg = 0.01 and keeps that fit (not the 10**7 times larger ridge of the last retry)."""
    obs, ret = _baseline_data()
    ret[1, 0, 3] = float("nan")
    got = mr.linear_baseline(obs, ret, reg=0.01)
    assert torch.equal(got[1], torch.zeros(2, 6, dtype=F64))
    torch.testing.assert_close(got[0], _ridge(obs[0], ret[0], 0.01, 2, 6), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- advantages

def test_advantages_before_standardisation_for_each_baseline():
    """normalize=False: G_t − b for the linear fit (rllab's ridge 1e-5), the per-step mean over K, and none."""
    pol = _policy()
    params = {n: p.detach() for n, p in pol.params().items()}
    goals = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=F64)
    traj = mr.sample_trajectories(pol, params, Nav2D(horizon=5), goals, 3, generator=torch.Generator().manual_seed(0))
    gamma = 0.9
    g = torch.zeros_like(traj.rewards)
    for b in range(2):
        for k in range(3):
            for t in range(5):
                g[b, k, t] = sum(gamma ** (l - t) * traj.rewards[b, k, l] for l in range(t, 5))
    lin = torch.stack([_ridge(traj.obs[b], g[b], 1e-5, 3, 5) for b in range(2)])
    mean = torch.stack([torch.stack([sum(g[b, k, t] for k in range(3)) / 3 for t in range(5)]) for b in range(2)])
    torch.testing.assert_close(mr.advantages(traj, gamma, "linear", False), g - lin, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(mr.advantages(traj, gamma, "mean", False), g - mean[:, None, :])
    torch.testing.assert_close(mr.advantages(traj, gamma, "none", False), g)


def test_advantages_default_to_gamma_099_the_linear_baseline_and_standardisation():
    pol = _policy()
    params = {n: p.detach() for n, p in pol.params().items()}
    goals = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=F64)
    traj = mr.sample_trajectories(pol, params, Nav2D(horizon=5), goals, 3, generator=torch.Generator().manual_seed(0))
    raw = mr.advantages(traj, 0.99, "linear", False).flatten(1)
    ref = torch.stack([(r - r.mean()) / (r.std() + 1e-8) for r in raw]).view(2, 3, 5)
    torch.testing.assert_close(mr.advantages(traj), ref)
    assert (mr.advantages(traj, 0.9) - ref).abs().max() > 1e-3


def test_standardisation_adds_1e_8_to_the_standard_deviation():
    """Returns that differ by ~1e-7 within a task: (A − mean) / (std + 1e-8) is far from dividing by the bare
    std (or by std − 1e-8)."""
    r = torch.zeros(2, 2, 3, dtype=F64)
    r[:, 0, 0] = torch.tensor([1e-7, 3e-7], dtype=F64)
    traj = Trajectories(torch.zeros(2, 2, 3, 2, dtype=F64), torch.zeros(2, 2, 3, 2, dtype=F64), r)
    got = mr.advantages(traj, 1.0, "none", True)
    for b in range(2):
        flat = [sum(r[b, k, l].item() for l in range(t, 3)) for k in range(2) for t in range(3)]
        m = sum(flat) / 6
        sd = math.sqrt(sum((v - m) ** 2 for v in flat) / 5)
        want = torch.tensor([(v - m) / (sd + 1e-8) for v in flat], dtype=F64).view(2, 3)
        torch.testing.assert_close(got[b], want, rtol=1e-9, atol=0)
        assert abs(got[b].std().item() - 1) > 0.02  # the epsilon is visible here


# ---------------------------------------------------------------- inner step and outer loss

def _logp_by_hand(pol, params, traj, b):
    """log π(a|s) of task b's K*T steps from torch.distributions."""
    one = {n: v[b] for n, v in params.items()} if mr.per_task(params) else params
    obs, act = traj.obs[b].reshape(-1, traj.obs.shape[-1]), traj.actions[b].reshape(-1, traj.actions.shape[-1])
    d = torch.distributions.Normal(_mlp_by_hand(one, obs, len(pol.layers)), one["log_std"].exp())
    return d.log_prob(act).sum(-1)


def test_inner_loss_is_minus_the_mean_of_logp_times_advantage_per_task():
    pol = _policy()
    traj = _traj()
    adv = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    for params in ({n: p.detach() for n, p in pol.params().items()}, _random_params(pol, 2)):
        got = mr.inner_loss(pol, params, traj, adv)
        want = torch.stack([-(_logp_by_hand(pol, params, traj, b) * adv[b].reshape(-1)).sum() / 12 for b in range(2)])
        torch.testing.assert_close(got, want)


def test_adapt_loop_first_order_step_has_the_identity_jacobian():
    """first_order=True: θ'_i = θ − α g_i with g_i treated as a constant, so d Σ_i w·θ'_i / dθ = Σ_i w
    exactly; the values equal the second-order step's. With one task (B = 1) the result is stacked too."""
    pol = _policy(hidden=(3,))
    for B in (1, 2):
        traj = _traj(B=B)
        adv = torch.randn(B, 3, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
        theta = {n: p.detach().clone().requires_grad_() for n, p in pol.params().items()}
        fo = mr.adapt_loop(pol, theta, traj, adv, 0.5, first_order=True)
        so = mr.adapt_loop(pol, theta, traj, adv, 0.5)
        w = {n: torch.randn(v.shape, generator=torch.Generator().manual_seed(len(n)), dtype=F64) for n, v in fo.items()}
        for n in fo:
            assert fo[n].shape == (B, *theta[n].shape)
            torch.testing.assert_close(fo[n], so[n])
        g_fo = torch.autograd.grad(sum((fo[n] * w[n]).sum() for n in w), list(theta.values()))
        g_so = torch.autograd.grad(sum((so[n] * w[n]).sum() for n in w), list(theta.values()))
        for n, a, b in zip(theta, g_fo, g_so):
            torch.testing.assert_close(a, w[n].sum(0), rtol=1e-12, atol=1e-12)
            if n == "log_std":
                assert (b - a).abs().max() > 1e-3  # the default (second order) differs


def test_adapt_keeps_the_second_order_graph_by_default():
    """Without create_graph the step is differentiable in θ, and its Hessian term is the float64 finite
    difference of the adapted parameters."""
    pol = _policy(hidden=(3,))
    traj = _traj(B=1)
    adv = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    theta = {n: p.detach().clone().requires_grad_() for n, p in pol.params().items()}
    new = mr.adapt(pol, theta, traj, adv, 0.5)
    assert all(v.requires_grad for v in new.values())
    d = torch.autograd.grad(new["log_std"][0, 0], theta["log_std"])[0]
    eps = 1e-6
    plus = {n: v.detach().clone() for n, v in theta.items()}
    minus = {n: v.detach().clone() for n, v in theta.items()}
    plus["log_std"][0] += eps
    minus["log_std"][0] -= eps
    fd = (mr.adapt(pol, plus, traj, adv, 0.5, create_graph=False)["log_std"][0, 0]
          - mr.adapt(pol, minus, traj, adv, 0.5, create_graph=False)["log_std"][0, 0]) / (2 * eps)
    torch.testing.assert_close(d[0], fd, rtol=1e-6, atol=1e-8)
    assert abs(fd.item() - 1.0) > 1e-3  # not the identity of a first-order step


def test_outer_loss_plain_and_clipped_surrogate_element_by_element():
    """Ratios far from one on both sides, both signs of A: −mean min(ρA, clip(ρ, 1 ± ε) A) with ε = 0.2
    by default, and −mean log π A without old log-probabilities."""
    pol = _policy()
    params = _random_params(pol, 2)
    traj = _traj()
    adv = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    logp = torch.stack([_logp_by_hand(pol, params, traj, b) for b in range(2)])  # (B, K*T)
    a = adv.reshape(2, 12)
    torch.testing.assert_close(mr.outer_loss(pol, params, traj, adv), -(logp * a).sum() / 24)
    shift = torch.linspace(-0.6, 0.6, 24, dtype=F64).view(2, 12)
    old = logp - shift  # ratio exp(shift) in [0.55, 1.82]
    for clip, kw in ((0.2, {}), (0.1, {"clip": 0.1})):
        terms = []
        for b in range(2):
            for j in range(12):
                rho = math.exp(logp[b, j].item() - old[b, j].item())
                c = min(max(rho, 1 - clip), 1 + clip)
                terms.append(min(rho * a[b, j].item(), c * a[b, j].item()))
        want = -sum(terms) / 24
        torch.testing.assert_close(mr.outer_loss(pol, params, traj, adv, old, **kw).item(), want, rtol=1e-12, atol=0)
