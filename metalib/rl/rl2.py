"""RL²: a recurrent policy whose hidden state is the learning algorithm (Duan et al. 2016).

The seed's §3: sample a task (MDP M_i), reset the hidden state, play several episodes *without*
resetting between them, update the weights by policy gradient; repeat. The GRU reads, at every
step, (observation, previous action, previous reward, episode-done flag), so its hidden state can
summarise everything the agent has learned about the current task.

* `RL2Policy`: GRU cell + linear policy and value heads;
* `should_reset(t, episode_len, rule)`: the hidden-state reset rule, an explicit argument:
  ``"task"`` (reset when a new task starts: correct), ``"episode"`` (reset at every episode: the
  agent forgets what it learned), ``"never"`` (the previous task leaks into the next). A reset
  zeros the hidden state *and* rebuilds the next input as at a task's start (no previous action,
  reward or done flag), so that after an ``"episode"`` reset nothing of the previous episode reaches
  the GRU: every episode is then played exactly like the first (tests/test_rl2.py checks this);
* `rollout`: play a batch of trials (all tasks step together; the policy samples with a Gumbel-max
  draw from a ``torch.Generator``);
* `a2c_loss`: advantage actor-critic with GAE (Schulman et al. 2016) computed across episode
  boundaries within a trial (the trial, not the episode, is RL²'s unit of return);
* `train_rl2`: the loop, through `metalib.meta_train` (on bandits it can learn from the expected
  reward p[a] instead of the sampled 0/1 reward: ``RL2Config.train_reward``); `evaluate_rl2`: returns
  on fresh tasks.

Taught in notebook 07 (meta-RL with RL², Problem 2).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..train import History, TrainConfig, meta_train

__all__ = ["RESET_RULES", "should_reset", "RL2Policy", "sample_action", "Rollout", "rollout", "replay", "gae", "a2c_loss",
           "RL2Config", "train_rl2", "evaluate_rl2"]

RESET_RULES = ("task", "episode", "never")


def should_reset(t: int, episode_len: int, rule: str) -> bool:
    """Whether to zero the hidden state before step ``t`` (0-based) of a trial.

    "task": only at t = 0 (a new task starts); "episode": whenever an episode starts
    (t a multiple of ``episode_len``); "never": not even at a new task.
    """
    if rule not in RESET_RULES:
        raise ValueError(f"reset must be one of {RESET_RULES}, got {rule!r}")
    if rule == "task":
        return t == 0
    if rule == "episode":
        return t % episode_len == 0
    return False


class RL2Policy(nn.Module):
    """GRU policy for RL²: input (obs, one-hot previous action, previous reward, done flag).

    Args:
        obs_dim: observation size (0 for bandits).
        n_actions: number of discrete actions.
        hidden: GRU hidden size.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 128):
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, hidden
        self.gru = nn.GRUCell(obs_dim + n_actions + 2, hidden)
        self.pi = nn.Linear(hidden, n_actions)
        self.v = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.pi.weight, gain=0.01)  # start close to the uniform policy
        nn.init.zeros_(self.pi.bias)

    def initial_state(self, batch: int, device=None) -> torch.Tensor:
        """Zeros (B, hidden): the state a reset sets."""
        return torch.zeros(batch, self.hidden, device=device or self.pi.weight.device)

    def make_input(self, obs: torch.Tensor, prev_action: torch.Tensor | None, prev_reward: torch.Tensor,
                   done: torch.Tensor) -> torch.Tensor:
        """Concatenate (B, obs_dim), one-hot previous action (zeros if None), reward (B,), done (B,)."""
        if prev_action is None:
            a = obs.new_zeros(obs.shape[0], self.n_actions)
        else:
            a = F.one_hot(prev_action, self.n_actions).to(obs.dtype)
        return torch.cat([obs, a, prev_reward.view(-1, 1).to(obs.dtype), done.view(-1, 1).to(obs.dtype)], 1)

    def forward(self, h: torch.Tensor, x: torch.Tensor):
        """One step: returns (logits (B, A), value (B,), new hidden state (B, hidden))."""
        h = self.gru(x, h)
        return self.pi(h), self.v(h).squeeze(-1), h


def sample_action(logits: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
    """Actions (B,) drawn from softmax(logits) (B, A) by the Gumbel-max trick, or the argmax if ``greedy``.

    Draws exactly one (B, A) tensor of uniforms from ``generator`` (none when greedy).
    """
    if greedy:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-12, 1 - 1e-7)
    return (logits.detach() - torch.log(-torch.log(u))).argmax(-1)


class Rollout(NamedTuple):
    """A batch of trials, all tensors (B, T) with T = n_episodes * episode_len."""
    rewards: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    h: torch.Tensor  # final hidden state (B, hidden), to carry into a next task under "never"
    inputs: torch.Tensor  # (B, T, D) what the GRU read at each step (for PPO's replay)


def rollout(policy: RL2Policy, env, tasks: torch.Tensor, *, reset: str = "task",
            generator: torch.Generator | None = None, h: torch.Tensor | None = None,
            greedy: bool = False) -> Rollout:
    """Play one trial (``env.n_episodes`` episodes) on each of the B tasks at once.

    Args:
        policy: an `RL2Policy`.
        env: an environment of `metalib.rl.envs`; ``tasks`` from its ``sample_tasks``.
        reset: the hidden-state rule (`should_reset`).
        generator: randomness of the environment and of the action samples.
        h: hidden state to start from (B, hidden), e.g. the previous task's final state; zeros if None.
        greedy: take the most likely action instead of sampling.

    Returns:
        A `Rollout`; it carries gradients unless called under ``torch.no_grad()``.
    """
    B = tasks.shape[0]
    h = policy.initial_state(B, tasks.device) if h is None else h
    state, obs = env.reset(tasks)
    x = policy.make_input(obs, None, obs.new_zeros(B), obs.new_zeros(B))
    out = {k: [] for k in ("rewards", "actions", "logp", "values", "entropy")}
    inputs = []
    for t in range(env.n_episodes * env.episode_len):
        if should_reset(t, env.episode_len, reset):
            h = torch.zeros_like(h)
            if t > 0:  # a reset forgets the last transition too: the input is that of a fresh start
                x = policy.make_input(obs, None, obs.new_zeros(B), obs.new_zeros(B))
        inputs.append(x)
        logits, value, h = policy(h, x)
        logp_all = F.log_softmax(logits, -1)  # (B, A)
        action = sample_action(logits, generator, greedy)
        state, obs, reward = env.step(tasks, state, action, generator)
        done = (t + 1) % env.episode_len == 0
        if done:
            state, obs = env.reset(tasks)
        x = policy.make_input(obs, action, reward, obs.new_full((B,), float(done)))
        for k, v in zip(out, (reward, action, logp_all.gather(1, action[:, None]).squeeze(1), value,
                              -(logp_all.exp() * logp_all).sum(-1))):
            out[k].append(v)
    return Rollout(*(torch.stack(v, 1) for v in out.values()), h, torch.stack(inputs, 1))


def replay(policy: RL2Policy, inputs: torch.Tensor, actions: torch.Tensor, episode_len: int,
           reset: str = "task"):
    """Re-run the GRU over recorded inputs (B, T, D): (logp of ``actions``, values, entropy), each (B, T)."""
    h = policy.initial_state(inputs.shape[0], inputs.device)
    logp, values, ent = [], [], []
    for t in range(inputs.shape[1]):
        if should_reset(t, episode_len, reset):
            h = torch.zeros_like(h)
        logits, value, h = policy(h, inputs[:, t])
        lp = F.log_softmax(logits, -1)  # (B, A)
        logp.append(lp.gather(1, actions[:, t, None]).squeeze(1))
        values.append(value), ent.append(-(lp.exp() * lp).sum(-1))
    return torch.stack(logp, 1), torch.stack(values, 1), torch.stack(ent, 1)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates (B, T) over a whole trial (episode ends are not cut).

    delta_t = r_t + gamma V_{t+1} - V_t with V_T = 0 at the end of the trial;
    A_t = delta_t + gamma lam A_{t+1}.
    """
    values = values.detach()
    next_v = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)  # (B, T)
    delta = rewards + gamma * next_v - values
    adv, running = torch.zeros_like(delta), torch.zeros_like(delta[:, 0])
    for t in range(delta.shape[1] - 1, -1, -1):
        running = delta[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv


@dataclass(frozen=True)
class RL2Config:
    """RL² with A2C (defaults: the k=5, n=10 bandit recipe of benchmarks/rl2_bandits.py).

    Attributes:
        hidden: GRU hidden size.
        gamma: discount within a trial (1: the trial's total reward is the objective).
        gae_lambda: GAE lambda.
        value_coef: weight of the value loss.
        value_scale: the value head predicts V / value_scale (use about the return's size for long
            trials, so that the value loss does not swamp the policy gradient in the shared GRU).
        entropy_start, entropy_end: entropy bonus, annealed linearly over training.
        lr_end: the Adam learning rate decays linearly from ``train.lr`` to ``lr_end * train.lr``.
        train_reward: the reward in the learning signal (the GRU always reads the sampled reward):
            ``"sampled"``, or ``"expected"``: E[r | task, action] minus the task's mean (for envs with
            ``expected_reward``, i.e. bandits: p[a] - mean(p)). Same policy gradient in expectation
            (r_t is replaced by its conditional mean, and a per-task constant adds zero), much less noise.
        reset: hidden-state rule used in training ("task" is RL²'s).
        seed: seeds the initial weights and the task/action generator.
        train: outer loop settings (steps = updates, meta_batch = trials per update, Adam lr).
    """
    hidden: int = 64
    gamma: float = 1.0
    gae_lambda: float = 0.9
    value_coef: float = 0.5
    value_scale: float = 1.0
    entropy_start: float = 0.05
    entropy_end: float = 0.0
    lr_end: float = 0.1
    train_reward: str = "sampled"
    reset: str = "task"
    seed: int = 0
    train: TrainConfig = TrainConfig(steps=2400, meta_batch=2048, lr=1e-2, eval_every=0)

    def quick_overrides(self) -> dict:
        """Quick mode: a few small updates, same code path."""
        return {"hidden": min(self.hidden, 32),
                "train": dataclasses.replace(self.train, steps=min(self.train.steps, 5),
                                             meta_batch=min(self.train.meta_batch, 64), eval_every=5)}


def a2c_loss(ro: Rollout, cfg: RL2Config, entropy_coef: float,
             rewards: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Actor-critic loss of a rollout: -logp * normalised GAE + value MSE - entropy bonus.

    ``rewards`` (B, T) replaces ``ro.rewards`` in the advantages (see ``RL2Config.train_reward``).
    """
    values = ro.values * cfg.value_scale
    adv = gae(ro.rewards if rewards is None else rewards, values, cfg.gamma, cfg.gae_lambda)
    target = adv + values.detach()
    norm = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -(ro.logp * norm).mean()
    value_loss = 0.5 * ((target - values) / cfg.value_scale).pow(2).mean()
    entropy = ro.entropy.mean()
    loss = policy_loss + cfg.value_coef * value_loss - entropy_coef * entropy
    return loss, {"return": ro.rewards.sum(1).mean(), "entropy": entropy, "value_loss": value_loss}


def train_rl2(env, cfg: RL2Config, *, policy: RL2Policy | None = None, validate=None, progress: bool = True,
              device=None) -> tuple[RL2Policy, History]:
    """Train an `RL2Policy` on ``env``'s task distribution with A2C (through `metalib.meta_train`).

    Returns:
        (policy, history); history.train has per-update ``return`` (mean trial return), ``entropy``.
    """
    if cfg.train_reward not in ("sampled", "expected"):
        raise ValueError(f"train_reward must be 'sampled' or 'expected', got {cfg.train_reward!r}")
    if cfg.train_reward == "expected" and not hasattr(env, "expected_reward"):
        raise ValueError(f"train_reward='expected' needs an env with expected_reward (bandits); "
                         f"{type(env).__name__} has none: use 'sampled'")
    device = torch.device(device or "cpu")
    torch.manual_seed(cfg.seed)
    policy = (policy or RL2Policy(env.obs_dim, env.n_actions, cfg.hidden)).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    step = [0]

    def step_loss(tasks):
        frac = step[0] / max(cfg.train.steps - 1, 1)
        step[0] += 1
        opt.param_groups[0]["lr"] = cfg.train.lr * (1 + frac * (cfg.lr_end - 1))
        ro = rollout(policy, env, tasks, reset=cfg.reset, generator=gen)
        signal = None
        if cfg.train_reward == "expected":  # p[a_t] - mean(p): (B, T)
            signal = env.expected_reward(tasks, ro.actions) - tasks.mean(1, keepdim=True)
        return a2c_loss(ro, cfg, cfg.entropy_start + frac * (cfg.entropy_end - cfg.entropy_start), signal)

    history = meta_train(policy, step_loss, lambda b: env.sample_tasks(b, gen, device), cfg.train,
                         validate=validate, optimizer=opt, progress=progress, desc="RL²")
    return policy, history


@torch.no_grad()
def evaluate_rl2(policy: RL2Policy, env, n_tasks: int = 10_000, *, reset: str = "task", greedy: bool = False,
                 seed: int = 12345, batch: int = 5000, n_trials: int = 1) -> torch.Tensor:
    """Per-step rewards (n_tasks, n_trials * T) of ``policy`` on fresh tasks.

    With ``n_trials`` > 1 the agent meets that many tasks back to back (the hidden state carries over
    unless the reset rule zeros it), as in Problem 2.
    """
    device = policy.pi.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for start in range(0, n_tasks, batch):
        b, h, parts = min(batch, n_tasks - start), None, []
        for _ in range(n_trials):
            ro = rollout(policy, env, env.sample_tasks(b, gen, device), reset=reset, generator=gen,
                         h=h, greedy=greedy)
            h = ro.h
            parts.append(ro.rewards)
        chunks.append(torch.cat(parts, 1))
    return torch.cat(chunks, 0)
