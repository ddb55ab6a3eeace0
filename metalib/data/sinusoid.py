"""Sinusoid regression tasks (Finn et al. 2017, MAML, section 5.1).

Each task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5.0], phase phi ~ U[0, pi] and
inputs x ~ U[-5, 5]. Taught in notebook 05 (MAML) and used in notebook 01's toy examples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..tasks import Task

__all__ = ["SinusoidTasks"]


@dataclass(frozen=True)
class SinusoidTasks:
    """The sinusoid task family. All ranges are the MAML paper's.

    Attributes:
        amplitude: (low, high) of the uniform amplitude.
        phase: (low, high) of the uniform phase.
        x_range: (low, high) of the uniform inputs.
    """
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    @staticmethod
    def function(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """A sin(x - phi), broadcasting (B,) parameters over x of shape (B, M, 1)."""
        return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))

    def mean_function(self, x: torch.Tensor) -> torch.Tensor:
        """E[A sin(x - phi)] over the task family: the best single prediction in mean squared error.

        A and phi are independent and uniform, so the mean is E[A] E[sin(x - phi)] with
        E[sin(x - phi)] = (cos(x - b) - cos(x - a)) / (b - a) for phi ~ U[a, b]. With the paper's
        ranges it is -(2 E[A] / pi) cos x, about -1.62 cos x (not 0): what joint pre-training learns
        (notebook 05, tests/test_sinusoid.py).
        """
        (a_lo, a_hi), (a, b) = self.amplitude, self.phase
        return (a_lo + a_hi) / 2 * (torch.cos(x - b) - torch.cos(x - a)) / (b - a)

    def sample_with_params(self, batch_size: int, k_support: int, k_query: int, *,
                           generator: torch.Generator, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32
                           ) -> tuple[Task, torch.Tensor, torch.Tensor]:
        """Sample B tasks with K support and Q query points each.

        Returns:
            (Task with x/y of shape (B, K, 1) and (B, Q, 1), amplitude (B,), phase (B,)).
        """
        if min(batch_size, k_support, k_query) < 1:
            raise ValueError(f"batch_size, k_support and k_query must be >= 1, got {batch_size}, {k_support}, {k_query}")
        kw = dict(generator=generator, device=generator.device, dtype=dtype)
        amp = _uniform((batch_size,), self.amplitude, **kw)
        phase = _uniform((batch_size,), self.phase, **kw)
        x = _uniform((batch_size, k_support + k_query, 1), self.x_range, **kw)  # (B, K+Q, 1)
        y = self.function(x, amp, phase)
        task = Task(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:]).to(device)
        return task, amp.to(device), phase.to(device)

    def sample(self, batch_size: int, k_support: int, k_query: int, *, generator: torch.Generator,
               device: str | torch.device = "cpu") -> Task:
        """Like `sample_with_params` but returns only the `Task`."""
        return self.sample_with_params(batch_size, k_support, k_query, generator=generator, device=device)[0]


def _uniform(shape, bounds, *, generator, device, dtype) -> torch.Tensor:
    low, high = bounds
    return torch.rand(shape, generator=generator, device=device, dtype=dtype) * (high - low) + low
