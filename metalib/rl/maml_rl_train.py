"""Training and evaluating MAML for RL (Algorithm 3) on `Nav2D`, through `metalib.meta_train`.

One meta-iteration: sample B goals; for each, K trajectories with π_θ (D_i), advantages with the
linear baseline, the differentiable inner step θ'_i (`maml_rl.adapt`; ``inner_steps`` > 1 repeats
this with fresh trajectories of each adapted policy); K trajectories with π_θ'_i (D'_i); the outer
loss on D'_i through θ'_i; an Adam step on θ. With ``outer="ppo"`` the same data
serves ``ppo_epochs`` Adam steps of the clipped surrogate (the inner step is recomputed each time).
With ``inner_steps=0`` the same loop is joint pre-training: one policy for all goals, no adaptation
(the baseline of the MAML paper's Fig. 4).

Evaluation (`evaluate_adaptation`) repeats "sample K trajectories, take a policy-gradient step" on
held-out goals and records the mean return before each step (0, 1, 2, 3 steps).

Taught in notebook 08; benchmarks/maml_rl.py ships the checkpoints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import checkpoint_dir, load_checkpoint, save_checkpoint
from ..train import History, TrainConfig, meta_train
from .maml_rl import GaussianMLPPolicy, adapt, advantages, outer_loss, sample_trajectories
from .nav2d import Nav2D

__all__ = ["MAMLRLConfig", "train_maml_rl", "evaluate_adaptation", "save_maml_policy", "load_maml_policy"]


@dataclass(frozen=True)
class MAMLRLConfig:
    """MAML-RL on 2-D navigation (defaults: the shipped recipe, see data/checkpoints/README.md).

    Attributes:
        hidden: widths of the policy's hidden layers.
        init_std: initial σ of the Gaussian policy (σ is learned).
        inner_lr: α, the inner policy-gradient step size (on normalised advantages).
        inner_steps: inner steps in meta-training (each on fresh trajectories of the policy adapted so far);
            0 is joint pre-training (the baseline: one policy for all goals).
        trajectories: K, trajectories per task for each inner step and for the outer loss.
        gamma: discount of the returns-to-go used in the advantages.
        baseline: "linear" (the paper's), "mean" or "none" (see `maml_rl.advantages`).
        normalize: standardise advantages per task.
        outer: "adam" (plain policy gradient, one Adam step per meta-batch) or "ppo" (clipped surrogate).
        ppo_epochs, ppo_clip: PPO's passes over one meta-batch and its ε.
        loss_every_step: average the outer loss over the policies after each of the inner steps
            (1..inner_steps) instead of using the last one only (the "multi-step loss" of MAML++,
            Antoniou et al. 2019); the trajectories are the ones the next inner step uses anyway.
        first_order: drop the second-order terms of the inner step (FOMAML) in meta-training.
        seed: initial weights and every sampled goal/action.
        train: outer loop (steps = Adam steps, meta_batch = B goals, lr = β).
    """
    hidden: tuple = (64, 64)
    init_std: float = 1.0
    inner_lr: float = 0.03
    inner_steps: int = 2
    trajectories: int = 20
    gamma: float = 0.99
    baseline: str = "linear"
    normalize: bool = False
    outer: str = "adam"
    ppo_epochs: int = 4
    ppo_clip: float = 0.2
    loss_every_step: bool = True
    first_order: bool = False
    seed: int = 0
    train: TrainConfig = TrainConfig(steps=300, meta_batch=20, lr=3e-3, eval_every=0, grad_clip=1.0)

    def quick_overrides(self) -> dict:
        """Quick mode: a few small meta-iterations, same code path."""
        return {"trajectories": min(self.trajectories, 5),
                "train": dataclasses.replace(self.train, steps=min(self.train.steps, 4),
                                             meta_batch=min(self.train.meta_batch, 4), eval_every=0)}


def _check(cfg: MAMLRLConfig) -> None:
    if cfg.outer not in ("adam", "ppo"):
        raise ValueError(f"outer must be 'adam' or 'ppo', got {cfg.outer!r}")
    if cfg.inner_steps < 0:
        raise ValueError(f"inner_steps must be >= 0 (0: joint pre-training), got {cfg.inner_steps}")


def train_maml_rl(cfg: MAMLRLConfig, env: Nav2D | None = None, *, policy: GaussianMLPPolicy | None = None,
                  validate=None, progress: bool = True) -> tuple[GaussianMLPPolicy, History]:
    """Meta-train a `GaussianMLPPolicy` (Algorithm 3) through `metalib.meta_train`.

    Returns:
        (policy, history); history.train has per-step ``pre`` and ``post`` (mean returns of D_i and D'_i).
    """
    _check(cfg)
    env = env or Nav2D()
    torch.manual_seed(cfg.seed)
    policy = policy or GaussianMLPPolicy(env.obs_dim, env.action_dim, cfg.hidden, cfg.init_std)
    gen = torch.Generator().manual_seed(cfg.seed)
    epochs = cfg.ppo_epochs if cfg.outer == "ppo" else 1
    cache: dict = {"left": 0}

    def sample(b: int):
        if cache["left"] == 0:  # fresh goals and trajectories; PPO reuses them for `epochs` steps
            cache.update(left=epochs, batch=sample_stages(policy, env, cfg, b, gen))
        cache["left"] -= 1
        return cache["batch"]

    def step_loss(stages):
        return meta_loss(policy, stages, cfg)

    history = meta_train(policy, step_loss, sample, cfg.train, validate=validate, progress=progress,
                         desc="MAML-RL" if cfg.inner_steps else "pre-train")
    return policy, history


def sample_stages(policy: GaussianMLPPolicy, env: Nav2D, cfg: MAMLRLConfig, b: int, gen: torch.Generator) -> list:
    """One meta-batch of ``b`` goals: for stage s = 0..inner_steps, K trajectories of θ after s inner
    steps with their advantages and log-probabilities, ``[(traj, adv, old_logp), ...]``."""
    goals = env.sample_tasks(b, gen)
    theta, stages = {n: p.detach() for n, p in policy.params().items()}, []
    for s in range(cfg.inner_steps + 1):  # stage s: K trajectories of θ after s inner steps
        traj = sample_trajectories(policy, theta, env, goals, cfg.trajectories, generator=gen)
        adv = advantages(traj, cfg.gamma, cfg.baseline, cfg.normalize)
        B, K, T, D = traj.obs.shape
        old = policy.log_prob(theta, traj.obs.reshape(B, K * T, D), traj.actions.reshape(B, K * T, -1))
        stages.append((traj, adv, old))
        if s < cfg.inner_steps:
            theta = adapt(policy, theta, traj, adv, cfg.inner_lr, create_graph=False)
    return stages


def meta_loss(policy: GaussianMLPPolicy, stages: list, cfg: MAMLRLConfig) -> tuple[torch.Tensor, dict]:
    """(outer loss through the inner steps, logged values) for the stages of `sample_stages`.

    Second order through every inner step, unless ``cfg.first_order``: then each adapted θ'_i is θ plus a
    constant step, so the meta-gradient is the sum over tasks of ∇_θ' of the outer loss at θ'_i.
    """
    adapted, losses, last = policy.params(), [], len(stages) - 1
    for s, (traj, adv, old) in enumerate(stages):
        if s == last or (cfg.loss_every_step and s > 0):  # D'_i: trajectories of an adapted policy
            if cfg.first_order and s > 0:  # FOMAML: θ'_i = θ + (a constant step)
                adapted = {n: p + (adapted[n] - p).detach() for n, p in policy.params().items()}
            losses.append(outer_loss(policy, adapted, traj, adv, old if cfg.outer == "ppo" else None, cfg.ppo_clip))
        if s < last:  # θ -> θ'_i through the inner step (second order unless first_order)
            adapted = adapt(policy, adapted, traj, adv, cfg.inner_lr, create_graph=not cfg.first_order)
    return torch.stack(losses).mean(), {"pre": stages[0][0].returns().mean(), "post": stages[-1][0].returns().mean(),
                                        "std": policy.log_std.exp().mean()}


@torch.no_grad()
def evaluate_adaptation(policy: GaussianMLPPolicy, goals: torch.Tensor, *, steps: int = 3, k: int = 20,
                        inner_lr: float = 0.03, gamma: float = 0.99, baseline: str = "linear",
                        normalize: bool = False, env: Nav2D | None = None, seed: int = 0,
                        chunk: int = 100) -> torch.Tensor:
    """Mean return of K trajectories per goal after 0..steps inner steps: (n_goals, steps + 1).

    At each step the current (adapted) policy samples K trajectories; their mean return is recorded
    and their policy gradient takes the next step (as in the MAML paper's Fig. 4).
    """
    env = env or Nav2D()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, goals.shape[0], chunk):
        g = goals[start:start + chunk]
        theta = {n: p.detach() for n, p in policy.params().items()}
        row = []
        for s in range(steps + 1):
            traj = sample_trajectories(policy, theta, env, g, k, generator=gen)
            row.append(traj.returns().mean(1))  # (b,)
            if s < steps:
                theta = adapt(policy, theta, traj, advantages(traj, gamma, baseline, normalize), inner_lr,
                              create_graph=False)
        out.append(torch.stack(row, 1))
    return torch.cat(out, 0)


def save_maml_policy(path: str | Path, policy: GaussianMLPPolicy, cfg: MAMLRLConfig, env: Nav2D | None = None,
                     **meta) -> Path:
    """Write the policy with its config and environment (plain values) and ``meta`` (command, timings, ...)."""
    return save_checkpoint(path, policy.state_dict(), config=cfg, env=dataclasses.asdict(env or Nav2D()), **meta)


def load_maml_policy(name_or_path: str | Path) -> tuple[GaussianMLPPolicy, MAMLRLConfig, Nav2D, dict]:
    """(policy, config, env, meta); a bare file name is looked up in ``data/checkpoints/``."""
    path = Path(name_or_path)
    if not path.is_file() and not path.is_absolute() and len(path.parts) == 1:
        path = checkpoint_dir() / path
    blob = load_checkpoint(path)
    meta = blob["meta"]
    c = dict(meta["config"])
    cfg = MAMLRLConfig(**{**c, "hidden": tuple(c["hidden"]), "train": TrainConfig(**c["train"])})
    env = Nav2D(**meta["env"])
    policy = GaussianMLPPolicy(env.obs_dim, env.action_dim, cfg.hidden, cfg.init_std)
    policy.load_state_dict(blob["state_dict"])
    return policy, cfg, env, meta
