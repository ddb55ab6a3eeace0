"""2-D point navigation (MAML paper §5.3), batched in pure PyTorch.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
§5.3: a point agent starts at the origin and must move to a goal drawn uniformly from the square
[-0.5, 0.5]²; it observes its own position, not the goal; an action is a velocity, clipped to
[-0.1, 0.1] per coordinate; the reward after each step is the negative distance to the goal (as in
the paper's reference code, cbfinn/maml_rl's PointEnvRandGoal; the paper's text says the negative
squared distance); an episode has 100 steps. Unlike the reference code, actions are raw velocities
(no rllab ``normalize`` wrapper mapping [-1, 1] to the clip). The goal is the task: it can only be found from the rewards, which is what
MAML's inner policy-gradient step does (notebook 08).

Same functional interface as `metalib.rl.envs` (``sample_tasks``, ``reset``, ``step``), vectorised
over a batch of B rows (tasks, or tasks x trajectories after ``repeat_interleave``), with
randomness only from ``torch.Generator`` arguments. Reference values (mean over goals):

* staying at the origin: −100 E‖g‖ = −100 (√2 + asinh 1) / 6 ≈ −38.26 (`STAY_AT_ORIGIN`);
* the clipped straight-line oracle (`oracle_action`) ≈ −0.5 (``tests/test_maml_rl.py`` measures it);
* actions ~ N(0, I), clipped: ≈ −90.

Taught in notebook 08 (MAML for RL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Nav2D", "STAY_AT_ORIGIN", "oracle_action", "play"]

STAY_AT_ORIGIN = -100 * (math.sqrt(2) + math.asinh(1)) / 6  # −100 E‖g‖, g ~ U[-1/2, 1/2]²  (≈ −38.26)


@dataclass(frozen=True)
class Nav2D:
    """Point navigation to a hidden goal: obs = position (B, 2), action = velocity (B, 2).

    Attributes:
        goal_range: goals are uniform on [-goal_range, goal_range]².
        max_action: each action coordinate is clipped to [-max_action, max_action].
        horizon: steps per episode (``episode_len``; one episode per trajectory).
    """
    goal_range: float = 0.5
    max_action: float = 0.1
    horizon: int = 100

    obs_dim = 2
    action_dim = 2
    n_episodes = 1

    def __post_init__(self):
        if self.goal_range <= 0 or self.max_action <= 0 or self.horizon < 1:
            raise ValueError(f"Nav2D needs goal_range > 0, max_action > 0 and horizon >= 1, got "
                             f"{self.goal_range}, {self.max_action}, {self.horizon}")

    @property
    def episode_len(self) -> int:
        return self.horizon

    def sample_tasks(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """Goals (B, 2), uniform on the square."""
        u = torch.rand((batch, 2), generator=generator, device=device)
        return (2 * u - 1) * self.goal_range

    def reset(self, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every episode starts at the origin: state = obs = position (B, 2)."""
        pos = torch.zeros_like(tasks)
        return pos, pos

    def step(self, tasks: torch.Tensor, state: torch.Tensor, action: torch.Tensor, generator=None):
        """Move by the clipped action; reward = −‖new position − goal‖ (B,). Deterministic."""
        pos = state + action.clamp(-self.max_action, self.max_action)
        reward = -(pos - tasks).norm(dim=-1)
        return pos, pos, reward


def oracle_action(env: Nav2D, tasks: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The straight-line oracle that knows the goal: head for it, clipped (reaches it in ≤ 5 steps)."""
    return (tasks - pos).clamp(-env.max_action, env.max_action)


def play(env: Nav2D, tasks: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Rewards (B, horizon) of a policy given as ``act(pos) -> action`` (B, 2), on goals ``tasks`` (B, 2)."""
    pos, obs = env.reset(tasks)
    rewards = []
    for _ in range(env.horizon):
        pos, obs, r = env.step(tasks, pos, act(obs))
        rewards.append(r)
    return torch.stack(rewards, 1)  # (B, T)
