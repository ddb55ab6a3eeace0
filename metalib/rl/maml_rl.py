"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3): the pieces, as pure functions.

The seed's §3, "MAML for RL": a task T_i is an MDP; its loss is the negative expected return,
estimated from K sampled trajectories; the inner loop takes a policy-gradient step on it,
θ'_i = θ − α ∇_θ L_{T_i}(f_θ), and the outer loop differentiates the return of trajectories sampled
with θ'_i *through* that step (second order).

* `GaussianMLPPolicy`: a ReLU MLP for the mean and a state-independent log std; used functionally,
  ``policy.log_prob(params, obs, actions)`` over a parameter dict that is either shared (as in the
  module) or per task (a leading B dimension on every tensor);
* `sample_trajectories`: K trajectories for each of B tasks at once (no gradient);
* `discounted_returns`, `linear_baseline` (rllab's linear feature baseline, fitted per task by ridge
  regression), `advantages` (returns − baseline, optionally standardised per task);
* `inner_loss` (REINFORCE with a baseline, per task) and `adapt` (the differentiable inner step,
  vectorised over tasks: the shared θ is *expanded* to B per-task copies, so ``autograd.grad`` of the
  summed task losses gives each task its own gradient); `adapt_loop` is the reference that runs
  `metalib.maml.adapt` task by task (tests compare the two);
* `outer_loss`: plain policy gradient or PPO's clipped surrogate on post-update trajectories.

Training, evaluation and checkpoints are in `metalib.rl.maml_rl_train`. Taught in notebook 08.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .. import maml

__all__ = ["GaussianMLPPolicy", "Trajectories", "sample_trajectories", "discounted_returns", "linear_baseline",
           "advantages", "inner_loss", "adapt", "adapt_loop", "outer_loss", "per_task"]

Params = dict[str, torch.Tensor]


class GaussianMLPPolicy(nn.Module):
    """π_θ(a|s) = N(MLP(s), diag(exp(log_std))²): the MAML paper's policy form; the default sizes are the
    paper's (two hidden layers of 100 ReLUs), the course's recipe (`MAMLRLConfig`) uses (64, 64).

    Args:
        obs_dim, action_dim: sizes of s and a.
        hidden: hidden layer widths.
        init_std: initial standard deviation of every action coordinate.
    """

    def __init__(self, obs_dim: int = 2, action_dim: int = 2, hidden=(100, 100), init_std: float = 1.0):
        super().__init__()
        sizes = [obs_dim, *hidden, action_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def params(self) -> Params:
        """θ as a dict (the module's own parameters: an optimiser over ``parameters()`` updates them)."""
        return dict(self.named_parameters())

    def mean(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        """Action means (B, N, action_dim) for obs (B, N, obs_dim); per-task params have a leading B."""
        h = obs
        for i in range(len(self.layers)):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            h = h @ w.transpose(-1, -2) + b.unsqueeze(-2)  # (B, N, out): shared w (out, in) or per-task (B, out, in)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def log_std_of(self, params: Params) -> torch.Tensor:
        """log σ broadcastable against (B, N, action_dim)."""
        ls = params["log_std"]
        return ls.unsqueeze(-2) if ls.dim() == 2 else ls  # per task (B, 1, A) or shared (A,)

    def log_prob(self, params: Params, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a|s) summed over action coordinates: (B, N) for obs, actions (B, N, ·)."""
        mean, log_std = self.mean(params, obs), self.log_std_of(params)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def per_task(params: Params) -> bool:
    """Whether ``params`` carry a leading task dimension (adapted parameters do)."""
    return params["log_std"].dim() == 2


class Trajectories(NamedTuple):
    """K trajectories of T steps for each of B tasks; actions are the sampled (unclipped) ones."""
    obs: torch.Tensor      # (B, K, T, obs_dim): the state each action was taken in
    actions: torch.Tensor  # (B, K, T, action_dim)
    rewards: torch.Tensor  # (B, K, T)

    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory (B, K)."""
        return self.rewards.sum(-1)


@torch.no_grad()
def sample_trajectories(policy: GaussianMLPPolicy, params: Params, env, tasks: torch.Tensor, k: int, *,
                        generator: torch.Generator | None = None, greedy: bool = False) -> Trajectories:
    """Play ``k`` episodes of each of the B tasks (B, ...) with π_params (shared or per task), all at once."""
    B = tasks.shape[0]
    rows = tasks.repeat_interleave(k, 0)  # (B*K, ...) task of each trajectory
    state, obs = env.reset(rows)
    std = torch.exp(policy.log_std_of(params))
    all_obs, all_act, all_rew = [], [], []
    for _ in range(env.episode_len):
        o = obs.view(B, k, -1)  # (B, K, obs_dim)
        mean = policy.mean(params, o)
        a = mean if greedy else mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
        state, obs, r = env.step(rows, state, a.reshape(B * k, -1), generator)
        all_obs.append(o), all_act.append(a), all_rew.append(r.view(B, k))
    return Trajectories(torch.stack(all_obs, 2), torch.stack(all_act, 2), torch.stack(all_rew, 2))


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = Σ_{l≥0} γ^l r_{t+l} along the last dimension (…, T)."""
    out, running = torch.empty_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def _features(obs: torch.Tensor) -> torch.Tensor:
    """rllab's LinearFeatureBaseline features of (B, K, T, D) obs: [s, s², t, t², t³, 1] with t = step/100."""
    T = obs.shape[2]
    t = (torch.arange(T, device=obs.device, dtype=obs.dtype) / 100).view(1, 1, T, 1).expand(*obs.shape[:3], 1)
    s = obs.clamp(-10, 10)
    return torch.cat([s, s * s, t, t * t, t ** 3, torch.ones_like(t)], -1)  # (B, K, T, 2D + 4)


def linear_baseline(obs: torch.Tensor, returns: torch.Tensor, reg: float = 1e-5) -> torch.Tensor:
    """Fit V(s_t, t) ≈ G_t by ridge regression on each task's K trajectories; predictions (B, K, T).

    The MAML paper's baseline (rllab's LinearFeatureBaseline, ``reg_coeff=1e-5``), one fit per task;
    a task whose normal equations are singular is refitted with a 10x larger ridge (up to 7 times).
    """
    B, K, T = returns.shape
    x = _features(obs).reshape(B, K * T, -1)  # (B, N, F)
    xtx, xty = x.transpose(1, 2) @ x, x.transpose(1, 2) @ returns.reshape(B, K * T, 1)  # (B, F, F), (B, F, 1)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    w, todo = torch.zeros_like(xty), torch.ones(B, dtype=torch.bool, device=x.device)
    for attempt in range(8):  # as rllab: a singular fit (e.g. identical trajectories) retries with 10x the ridge
        sol, info = torch.linalg.solve_ex(xtx + (reg if attempt == 0 else max(reg, 1e-8) * 10 ** attempt) * eye, xty)
        good = todo & (info == 0) & sol.isfinite().all(2).all(1)
        w[good], todo = sol[good], todo & ~good
        if not todo.any():
            break
    return (x @ w).view(B, K, T)  # a fit that never succeeded predicts 0 (no baseline for that task)


def advantages(traj: Trajectories, gamma: float = 0.99, baseline: str = "linear", normalize: bool = True) -> torch.Tensor:
    """A_t = G_t − b(s_t, t) per task (B, K, T), standardised over each task's K·T steps if ``normalize``.

    ``baseline``: "linear" (`linear_baseline`), "mean" (the task's mean G_t at each step t) or "none".
    """
    g = discounted_returns(traj.rewards, gamma)
    if baseline == "linear":
        adv = g - linear_baseline(traj.obs, g)
    elif baseline == "mean":
        adv = g - g.mean(1, keepdim=True)
    elif baseline == "none":
        adv = g
    else:
        raise ValueError(f"baseline must be 'linear', 'mean' or 'none', got {baseline!r}")
    if normalize:
        flat = adv.flatten(1)  # (B, K*T)
        adv = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-8)).view_as(adv)
    return adv


def inner_loss(policy: GaussianMLPPolicy, params: Params, traj: Trajectories, adv: torch.Tensor) -> torch.Tensor:
    """REINFORCE surrogate per task (B,): −mean over the K·T steps of log π(a_t|s_t) · A_t.

    Its gradient is the policy-gradient estimate of ∇_θ L_{T_i} (Algorithm 3, line 6).
    """
    B, K, T, D = traj.obs.shape
    logp = policy.log_prob(params, traj.obs.reshape(B, K * T, D), traj.actions.reshape(B, K * T, -1))  # (B, K*T)
    return -(logp * adv.reshape(B, K * T)).mean(1)


def adapt(policy: GaussianMLPPolicy, params: Params, traj: Trajectories, adv: torch.Tensor, lr: float, *,
          create_graph: bool = True) -> Params:
    """One inner step for every task at once: θ'_i = θ − α ∇_θ L_{T_i}(θ) (Algorithm 3, line 7).

    Shared params (no task dimension) are expanded to B per-task views first: task i's loss depends on
    its view only, so ``autograd.grad(Σ_i L_i, views)`` is exactly each task's own gradient. With
    ``create_graph`` the result stays differentiable with respect to θ (second-order MAML); without
    it the step is taken on detached parameters (evaluation, no graph kept).
    """
    B = traj.obs.shape[0]
    if per_task(params):
        theta = dict(params)
    else:
        theta = {n: p.unsqueeze(0).expand(B, *p.shape) for n, p in params.items()}  # (B, ...) views
    if not create_graph:
        theta = {n: p.detach().requires_grad_() for n, p in theta.items()}
    with torch.enable_grad():
        loss = inner_loss(policy, theta, traj, adv).sum()
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)
    new = {n: p - lr * g for (n, p), g in zip(theta.items(), grads)}
    return new if create_graph else {n: p.detach() for n, p in new.items()}


def adapt_loop(policy: GaussianMLPPolicy, params: Params, traj: Trajectories, adv: torch.Tensor, lr: float,
               first_order: bool = False) -> Params:
    """Reference for `adapt`: `metalib.maml.adapt` on one task at a time, stacked to (B, ...)."""
    B, K, T, D = traj.obs.shape

    def fmodel(p, x):  # x = (N, obs_dim + action_dim) -> log π(a|s), (N,)
        return policy.log_prob(p, x[None, :, :D], x[None, :, D:])[0]

    x = torch.cat([traj.obs, traj.actions], -1).reshape(B, K * T, -1)  # (B, N, D + A)
    out = []
    for b in range(B):
        p = {n: v[b] for n, v in params.items()} if per_task(params) else params
        out.append(maml.adapt(fmodel, p, x[b], adv[b].reshape(-1), inner_lr=lr, first_order=first_order,
                              loss_fn=lambda logp, a: -(logp * a).mean()))
    return {n: torch.stack([o[n] for o in out]) for n in out[0]}


def outer_loss(policy: GaussianMLPPolicy, adapted: Params, traj: Trajectories, adv: torch.Tensor,
               old_logp: torch.Tensor | None = None, clip: float = 0.2) -> torch.Tensor:
    """Meta-objective on post-update trajectories D'_i (Algorithm 3, line 10), averaged over tasks.

    Plain policy gradient: −mean log π_θ'(a|s) A. With ``old_logp`` (B, K·T: log-probabilities when
    D'_i was sampled): PPO's clipped surrogate −mean min(ρA, clip(ρ, 1±ε)A), ρ = π_θ'/π_old.
    """
    B, K, T, D = traj.obs.shape
    logp = policy.log_prob(adapted, traj.obs.reshape(B, K * T, D), traj.actions.reshape(B, K * T, -1))
    a = adv.reshape(B, K * T)
    if old_logp is None:
        return -(logp * a).mean()
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a).mean()
