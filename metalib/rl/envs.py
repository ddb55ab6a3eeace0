"""Batched meta-RL environments in pure PyTorch: many tasks step at once, no Python loop over them.

A *trial* is one task (one MDP M_i of the seed's §3) played for ``n_episodes`` episodes of
``episode_len`` steps; RL² (Duan et al. 2016) keeps its hidden state across the episodes of a
trial. Every environment here has the same functional interface, vectorised over a batch of B
tasks that may live on any device:

* ``sample_tasks(B, generator) -> tasks``   the hidden task parameters (bandit arm probabilities,
  GridNavi goal cells);
* ``reset(tasks) -> (state, obs)``          the start of an episode;
* ``step(tasks, state, action, generator) -> (state, obs, reward)``.

Environments:

* `BernoulliBandit` (k arms, p ~ U[0, 1], n pulls; RL² paper §3.1): one pull is one episode;
* `DependentBandit` (two arms with p2 = 1 - p1; Wang et al. 2016, "Learning to reinforcement learn");
* `GridNavi` (5x5 grid, hidden goal, 15 steps per episode, 4 episodes per task, reward +1 on the
  goal and -0.1 elsewhere; Zintgraf et al. 2020, VariBAD).

Randomness only comes from the ``torch.Generator`` arguments (same seed, same tasks and rewards).
Taught in notebook 07 (meta-RL with RL²).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BernoulliBandit", "DependentBandit", "GridNavi", "MOVES"]


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniforms on ``device`` from ``generator`` (which must live on the same device)."""
    return torch.rand(shape, generator=generator, device=device)


@dataclass(frozen=True)
class BernoulliBandit:
    """k-armed Bernoulli bandit tasks with arm probabilities p ~ U[0, 1], played for n pulls.

    Attributes:
        k: number of arms (actions).
        n: pulls per task; each pull is one episode of length 1 (``n_episodes = n``).
    """
    k: int = 5
    n: int = 10

    def __post_init__(self):
        if self.k < 2 or self.n < 1:
            raise ValueError(f"a bandit needs k >= 2 arms and n >= 1 pulls, got k={self.k}, n={self.n}")

    obs_dim = 0
    episode_len = 1

    @property
    def n_actions(self) -> int:
        return self.k

    @property
    def n_episodes(self) -> int:
        return self.n

    def sample_tasks(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """Arm probabilities (B, k), i.i.d. U[0, 1]."""
        return _rand((batch, self.k), generator, device)

    def reset(self, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A bandit has no state and no observation: both are (B, 0) tensors."""
        empty = tasks.new_zeros(tasks.shape[0], 0)
        return empty, empty

    def expected_reward(self, tasks: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """E[reward | task, action] = p[action]: (B, T) for actions (B, T) (a learning signal, not an input)."""
        return tasks.gather(1, actions)  # (B, T)

    def step(self, tasks, state, action: torch.Tensor, generator=None):
        """Pull arm ``action`` (B,) of each task: reward 1 with probability p[action], else 0."""
        p = tasks.gather(1, action.view(-1, 1)).squeeze(1)  # (B,)
        reward = (_rand(p.shape, generator, p.device) < p).to(tasks.dtype)
        return state, state, reward


@dataclass(frozen=True)
class DependentBandit(BernoulliBandit):
    """Two-armed bandit whose arms are dependent: p1 ~ U[0, 1], p2 = 1 - p1 (Wang et al. 2016).

    One pull of either arm tells the agent about both, so the optimal policy explores very little.
    """
    k: int = 2
    n: int = 100

    def __post_init__(self):
        if self.k != 2:
            raise ValueError(f"the dependent bandit has exactly 2 arms, got k={self.k}")
        super().__post_init__()

    def sample_tasks(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        p1 = _rand((batch, 1), generator, device)
        return torch.cat([p1, 1 - p1], dim=1)  # (B, 2)


# stay, up, right, down, left as (dx, dy)
MOVES = torch.tensor([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]])


@dataclass(frozen=True)
class GridNavi:
    """VariBAD's GridNavi: find a hidden goal cell on a size x size grid, then stay there.

    The agent starts every episode in the corner (0, 0); the goal is uniform over the cells that are
    not within one step of the start (21 cells on 5x5, as in VariBAD). Actions: stay, up, right, down,
    left (moves off the grid are clipped). Reward after each step: +1 when the agent is on the goal,
    -0.1 otherwise. The goal stays the same for the ``n_episodes`` episodes of a task, so what the
    agent learned in episode 1 pays off in episodes 2-4.

    Attributes:
        size: grid side length.
        episode_len: steps per episode.
        n_episodes: episodes per task (trial).
        goal_reward: reward on the goal; step_reward: reward elsewhere.
    """
    size: int = 5
    episode_len: int = 15
    n_episodes: int = 4
    goal_reward: float = 1.0
    step_reward: float = -0.1

    n_actions = 5

    def __post_init__(self):
        if self.size < 3:
            raise ValueError(f"GridNavi needs size >= 3 (goals are cells not next to the start), got {self.size}")

    @property
    def obs_dim(self) -> int:
        return self.size * self.size  # one-hot cell

    def goal_cells(self, device="cpu") -> torch.Tensor:
        """Indices (y * size + x) of the cells a goal may occupy: all but (0,0), (1,0), (0,1), (1,1)."""
        cells = torch.arange(self.size * self.size, device=device)
        x, y = cells % self.size, cells // self.size
        return cells[(x > 1) | (y > 1)]

    def sample_tasks(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """Goal cells (B,) as int64 indices y * size + x, uniform over `goal_cells`."""
        cells = self.goal_cells(device)
        pick = (_rand((batch,), generator, device) * len(cells)).long().clamp_max(len(cells) - 1)
        return cells[pick]

    def observe(self, pos: torch.Tensor) -> torch.Tensor:
        """One-hot (B, size*size) of positions (B, 2) = (x, y)."""
        idx = pos[:, 1] * self.size + pos[:, 0]
        return torch.nn.functional.one_hot(idx, self.size * self.size).float()

    def reset(self, tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every episode starts at (0, 0): state = positions (B, 2) int64, obs one-hot (B, size*size)."""
        pos = torch.zeros(tasks.shape[0], 2, dtype=torch.long, device=tasks.device)
        return pos, self.observe(pos)

    def step(self, tasks, state, action: torch.Tensor, generator=None):
        """Move by ``MOVES[action]`` (clipped to the grid); reward +1 on the goal, else -0.1."""
        pos = (state + MOVES.to(state.device)[action]).clamp(0, self.size - 1)  # (B, 2)
        on_goal = pos[:, 1] * self.size + pos[:, 0] == tasks
        reward = torch.where(on_goal, self.goal_reward, self.step_reward).float()
        return pos, self.observe(pos), reward
