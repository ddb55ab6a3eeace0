"""Few-shot accuracy with a 95% confidence interval over many test episodes.

The papers' protocol (Vinyals et al. 2016, Snell et al. 2017, Finn et al. 2017): average
query accuracy over >= 600 test episodes, reported as mean +- 1.96 * std / sqrt(episodes).
Taught in notebook 01 (baselines), used by every method notebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .tasks import EpisodeSampler, Task

__all__ = ["Accuracy", "mean_ci95", "evaluate_accuracy", "query_accuracy"]

PAPER_EPISODES = 600


@dataclass(frozen=True)
class Accuracy:
    """Mean accuracy, the half-width of its 95% confidence interval, and the episode count."""
    mean: float
    ci95: float
    episodes: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.ci95:.1f}% ({self.episodes} episodes)"


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% CI half-width (normal approximation, 1.96 standard errors) of a 1-D sample."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if v.numel() == 1:
        return v.item(), float("nan")
    return v.mean().item(), 1.96 * v.std(unbiased=True).item() / math.sqrt(v.numel())


def query_accuracy(output: torch.Tensor, y_query: torch.Tensor) -> torch.Tensor:
    """Per-task accuracy (B,) from logits (B, M, N) or predicted labels (B, M)."""
    pred = output.argmax(-1) if output.dim() == y_query.dim() + 1 else output
    if pred.shape != y_query.shape:
        raise ValueError(f"predictions have shape {tuple(pred.shape)} but y_query has {tuple(y_query.shape)}; "
                         f"return logits (B, N*Q, N) or labels (B, N*Q)")
    return (pred == y_query).float().mean(-1)


def evaluate_accuracy(predict: Callable[[Task], torch.Tensor], sampler: EpisodeSampler, *,
                      episodes: int = PAPER_EPISODES, batch_size: int = 50, seed: int = 1234,
                      progress: bool = True, desc: str = "evaluate") -> Accuracy:
    """Accuracy of ``predict`` on fresh test episodes.

    Args:
        predict: maps a `Task` batch to logits (B, N*Q, N) or labels (B, N*Q). It decides
            itself whether it needs gradients (fine-tuning baselines do).
        sampler: the test-split sampler (its own generator is left untouched).
        episodes: number of test episodes (the papers use 600 or more).
        batch_size: episodes per call of ``predict``.
        seed: seeds a private generator, so every method sees the same episodes.
        progress: show a progress bar.

    Returns:
        An `Accuracy`.
    """
    from tqdm.auto import tqdm

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    gen = torch.Generator(device=sampler.split.images.device)
    gen.manual_seed(seed)
    accs = []
    with tqdm(total=episodes, desc=desc, disable=not progress, leave=False) as bar:
        done = 0
        while done < episodes:
            b = min(batch_size, episodes - done)
            task = sampler.sample(b, generator=gen)
            accs.append(query_accuracy(predict(task).detach(), task.y_query).cpu())
            done += b
            bar.update(b)
    mean, ci = mean_ci95(torch.cat(accs))
    return Accuracy(mean, ci, episodes)
