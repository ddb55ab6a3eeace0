"""A scripted GridNavi searcher: the reference the RL² agent is compared with in Problem 2.

The searcher knows the task distribution (goals are never next to the start) and keeps a *memory*:
the cells it has stood on without reward, and the goal once found. In each step it walks towards
the goal if it knows it, otherwise towards the nearest cell that may hold the goal and that it has
not visited (Manhattan distance; ties go to the first cell in row-major order, then x-moves before
y-moves). Three ways to treat that memory mirror the three hidden-state reset rules of RL²:

* ``"task"``: memory kept across the episodes of a task, cleared when a new task starts;
* ``"episode"``: memory cleared at every episode (it can never exploit what it found);
* ``"never"``: memory never cleared, so the previous task's goal and visited cells leak into the
  next task. A remembered goal that pays nothing is forgotten; with no unvisited candidate cell
  left, the searcher stays where it is (it believes it has looked everywhere).

`expected_returns` averages exactly over the goal distribution (and, for "never", over the previous
task's goal), so its numbers are expectations, not Monte-Carlo estimates: 4.00 / 10.76 / 11.07 /
11.07 per episode with memory, 4.00 for every episode when reset each episode, and 3.43 / 6.13 /
6.19 / 6.19 in a second task when memory leaks from the first.

Taught in notebook 07 (Problem 2: when to reset the hidden state).
"""
from __future__ import annotations

import torch

from .envs import MOVES, GridNavi

__all__ = ["Searcher", "expected_returns"]

_MOVES = MOVES.tolist()


class Searcher:
    """Nearest-unvisited-cell searcher on one GridNavi task (plain Python; one task at a time)."""

    def __init__(self, env: GridNavi):
        self.env = env
        n = env.size
        self.candidates = [(c % n, c // n) for c in env.goal_cells().tolist()]  # row-major order
        self.forget()

    def forget(self) -> None:
        """Clear the memory (the searcher's analogue of resetting RL²'s hidden state)."""
        self.visited, self.goal = set(), None

    def _target(self, pos):
        if self.goal is not None:
            return self.goal
        free = [c for c in self.candidates if c not in self.visited]
        if not free:  # looked everywhere (only possible with leaked memory): wait here
            return pos
        return min(free, key=lambda c: abs(c[0] - pos[0]) + abs(c[1] - pos[1]))

    def act(self, pos: tuple[int, int]) -> int:
        """Index into `MOVES` (0 stay, 1 up, 2 right, 3 down, 4 left) towards the current target."""
        tx, ty = self._target(pos)
        if tx != pos[0]:
            return 2 if tx > pos[0] else 4
        if ty != pos[1]:
            return 1 if ty > pos[1] else 3
        return 0

    def observe(self, pos: tuple[int, int], reward: float) -> None:
        """Update the memory after arriving at ``pos`` with ``reward``."""
        if reward > 0:
            self.goal = pos
        else:
            self.visited.add(pos)
            if self.goal == pos:  # a remembered goal that pays nothing is wrong (leaked memory)
                self.goal = None

    def play_episode(self, goal: int) -> float:
        """One episode from (0, 0) on the task with goal cell index ``goal``; returns its return."""
        env, pos, total = self.env, (0, 0), 0.0
        self.observe(pos, env.goal_reward if pos[1] * env.size + pos[0] == goal else env.step_reward)
        for _ in range(env.episode_len):
            dx, dy = _MOVES[self.act(pos)]
            pos = (min(max(pos[0] + dx, 0), env.size - 1), min(max(pos[1] + dy, 0), env.size - 1))
            r = env.goal_reward if pos[1] * env.size + pos[0] == goal else env.step_reward
            self.observe(pos, r)
            total += r
        return total


def _play_task(searcher: Searcher, goal: int, reset: str) -> list[float]:
    out = []
    for _ in range(searcher.env.n_episodes):
        if reset == "episode":
            searcher.forget()
        out.append(searcher.play_episode(goal))
    return out


def expected_returns(env: GridNavi, reset: str = "task", n_tasks: int = 1) -> torch.Tensor:
    """Exact expected per-episode returns (n_tasks * n_episodes,) of the searcher over back-to-back tasks.

    Averages over every sequence of goals (uniform over ``env.goal_cells()``) for ``n_tasks`` <= 2.

    Args:
        env: the GridNavi environment.
        reset: "task", "episode" or "never" (see the module docstring).
        n_tasks: 1 or 2 tasks played one after the other.
    """
    if reset not in ("task", "episode", "never"):
        raise ValueError(f"reset must be 'task', 'episode' or 'never', got {reset!r}")
    if n_tasks not in (1, 2):
        raise ValueError(f"n_tasks must be 1 or 2 (the exact average enumerates goal sequences), got {n_tasks}")
    goals = env.goal_cells().tolist()
    total = torch.zeros(n_tasks * env.n_episodes, dtype=torch.float64)
    seqs = [(g,) for g in goals] if n_tasks == 1 else [(g, h) for g in goals for h in goals]
    for seq in seqs:
        searcher, rets = Searcher(env), []
        for goal in seq:
            if reset == "task":
                searcher.forget()
            rets += _play_task(searcher, goal, reset)
        total += torch.tensor(rets, dtype=torch.float64)
    return total / len(seqs)
