"""The sinusoid family's mean function, and that joint pre-training learns it (notebook 05, section 3)."""
from __future__ import annotations

import math

import torch

from metalib.data import SinusoidTasks


def test_mean_function_is_the_average_over_tasks():
    fam = SinusoidTasks()
    x = torch.linspace(-5, 5, 41)
    closed = fam.mean_function(x)
    torch.testing.assert_close(closed, -2 * 2.55 / math.pi * torch.cos(x))  # -(2 E[A] / pi) cos x
    g = torch.Generator().manual_seed(0)
    amp = torch.rand(400_000, generator=g, dtype=torch.float64) * 4.9 + 0.1
    phase = torch.rand(400_000, generator=g, dtype=torch.float64) * math.pi
    mc = SinusoidTasks.function(x.double().view(1, -1, 1), amp, phase).mean(0).view(-1)
    assert (mc - closed.double()).abs().max() < 0.02, (mc - closed).abs().max()
    # another phase range: the general formula, not the special case
    other = SinusoidTasks(phase=(0.0, math.pi / 2))
    mc2 = SinusoidTasks.function(x.double().view(1, -1, 1), amp, phase / 2).mean(0).view(-1)
    assert (mc2 - other.mean_function(x).double()).abs().max() < 0.02


def test_pretrained_sine_model_predicts_the_mean_function():
    """The shipped pretrain_sine_k10 (no inner step in training) is the mean function, not 0."""
    from metalib.maml_train import load_maml
    from metalib.tasks import Task

    learner, _ = load_maml("pretrain_sine_k10", "cpu")
    fam = SinusoidTasks()
    tasks = fam.sample(500, 10, 100, generator=torch.Generator().manual_seed(1))
    pred = learner.predict(tasks, 0)                                   # (500, 100, 1)
    grid = torch.linspace(-5, 5, 200).view(1, 200, 1)
    curve = learner.predict(Task(grid, grid, grid, grid), 0).view(-1)  # no inner step: the labels are unused
    mean = fam.mean_function(grid).view(-1)
    corr = torch.corrcoef(torch.stack([curve, mean]))[0, 1]
    assert corr > 0.99, f"correlation with the mean function {corr:.3f}"
    mse = lambda p: float(((p - tasks.y_query) ** 2).mean())
    model, mean_fn, zero = mse(pred), mse(fam.mean_function(tasks.x_query)), mse(torch.zeros_like(pred))
    assert abs(model - mean_fn) < 0.1 * mean_fn < zero - mean_fn, (model, mean_fn, zero)
