"""Tasks and episodes: ``Task(x_support, y_support, x_query, y_query)`` and the N-way K-shot sampler.

Few-shot classification (Vinyals et al. 2016; seed §2): each task has a support set D^tr of
N classes x K examples and a query set D^ts of N x Q examples, labels relabelled 0..N-1.
`EpisodeSampler` draws a meta-batch of B tasks by indexing a `ClassSplit`'s uint8 image tensor
where it lives (CPU or GPU): no per-image Python, no PIL, no DataLoader.

Layout: support is class-major, ``y_support[b] = [0]*K + [1]*K + ... + [N-1]*K``; query the same
with Q per class. Same seed and device -> identical episodes.

Taught in notebook 01 (supervised meta-learning), exercise "the episode sampler".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:  # avoid an import cycle: metalib.data imports Task from here
    from .data.splits import ClassSplit

__all__ = ["Task", "EpisodeSampler"]


class Task(NamedTuple):
    """A batch of tasks (or one task when the leading batch dimension is absent).

    Attributes:
        x_support: (B, N*K, ...) inputs of D^tr.
        y_support: (B, N*K) labels of D^tr (int64 class ids or float targets).
        x_query: (B, N*Q, ...) inputs of D^ts.
        y_query: (B, N*Q) labels of D^ts.
    """
    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    def to(self, device: str | torch.device) -> "Task":
        """The same task with every tensor on ``device``."""
        return Task(*(t.to(device) for t in self))

    def select(self, i: int | slice) -> "Task":
        """Task ``i`` (or a slice of tasks) of a batch."""
        return Task(*(t[i] for t in self))

    @property
    def batch_size(self) -> int:
        return self.x_support.shape[0]


class EpisodeSampler:
    """Sample meta-batches of N-way K-shot tasks with Q queries per class, on the split's device.

    Args:
        split: a `metalib.data.ClassSplit` (images (C, M, H, W) uint8, M drawings per class).
        n_way: classes per task (N).
        k_shot: support examples per class (K).
        n_query: query examples per class (Q).
        seed: seeds the sampler's own ``torch.Generator`` (created on the split's device).
        dtype: dtype of the returned images, scaled to [0, 1].
        groups: optional (C,) int group id of every class (e.g. its alphabet). Then all N classes of
            a task come from one group, drawn uniformly among the groups with >= N classes: Lake et
            al.'s within-alphabet protocol (notebook 04).
        fixed_labels: every class keeps one label across all tasks, class c always label c mod N (a task
            draws one class of each residue): *non-mutually-exclusive* tasks, which a learner can solve
            by memorising the class -> label map and ignoring the support set (Yin et al. 2020,
            "Meta-Learning without Memorization"; notebook 09). Default: labels shuffled per task.

    Raises:
        ValueError: N larger than the split's classes, K + Q larger than the drawings per
            class, or a non-positive size.

    Example:
        >>> sampler = EpisodeSampler(split, n_way=5, k_shot=1, n_query=15, seed=0)
        >>> task = sampler.sample(32)   # x_support (32, 5, 1, 28, 28), y_query (32, 75)
    """

    def __init__(self, split: "ClassSplit", n_way: int, k_shot: int, n_query: int, *,
                 seed: int = 0, dtype: torch.dtype = torch.float32, groups: torch.Tensor | None = None,
                 fixed_labels: bool = False):
        n_classes, per_class = split.images.shape[:2]
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_way > n_classes:
            raise ValueError(f"n_way={n_way} but the split {split.name!r} has {n_classes} classes; "
                             f"use n_way <= {n_classes} or a larger split")
        if k_shot + n_query > per_class:
            raise ValueError(f"k_shot + n_query = {k_shot} + {n_query} = {k_shot + n_query} but each class "
                             f"has {per_class} examples; reduce k_shot or n_query")
        if fixed_labels and groups is not None:
            raise ValueError("fixed_labels and groups cannot be combined: choose one way of drawing the classes")
        self.split, self.n_way, self.k_shot, self.n_query = split, n_way, k_shot, n_query
        self.fixed_labels = fixed_labels
        self.dtype = dtype
        self.groups = self._eligible = None
        if groups is not None:
            groups = torch.as_tensor(groups, device=split.images.device)
            if groups.shape != (n_classes,):
                raise ValueError(f"groups must have one id per class, shape ({n_classes},), got {tuple(groups.shape)}")
            ids, counts = torch.unique(groups, return_counts=True)
            if not bool((counts >= n_way).any()):
                raise ValueError(f"no group has n_way={n_way} classes (largest: {int(counts.max())}); reduce n_way")
            self.groups, self._eligible = groups, ids[counts >= n_way]
        self.generator = torch.Generator(device=split.images.device)
        self.generator.manual_seed(int(seed))

    def sample_with_classes(self, batch_size: int, generator: torch.Generator | None = None
                            ) -> tuple[Task, torch.Tensor]:
        """Sample ``batch_size`` tasks; also return their classes (B, N) as split row indices."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gen = self.generator if generator is None else generator
        images = self.split.images
        dev = images.device
        B, N, K, Q = batch_size, self.n_way, self.k_shot, self.n_query
        n_classes, per_class = images.shape[:2]
        # N distinct classes per task: the top-N of i.i.d. uniforms is a uniform random subset
        scores = torch.rand(B, n_classes, generator=gen, device=dev)  # (B, C)
        if self.groups is not None:  # lift the classes of one random eligible group above all others
            pick = torch.randint(len(self._eligible), (B,), generator=gen, device=dev)
            scores = scores + (self.groups[None] == self._eligible[pick][:, None])  # in-group: [1, 2)
        classes = scores.topk(N, dim=1).indices  # (B, N)
        if self.fixed_labels:  # slot l takes one of the classes l, l + N, l + 2N, ...: label = class mod N
            slot = torch.arange(N, device=dev)
            count = (n_classes - slot + N - 1) // N  # (N,) classes per label
            classes = slot + N * (scores[:, :N] * count).long().clamp_max(count - 1)  # (B, N)
        draws = torch.rand(B, N, per_class, generator=gen, device=dev).argsort(dim=2)[..., :K + Q]  # (B, N, K+Q)
        x = images[classes[..., None], draws]  # (B, N, K+Q, H, W) uint8
        x = x.to(self.dtype).div_(255).unsqueeze(3)  # (B, N, K+Q, 1, H, W)
        hw = x.shape[-2:]
        labels = torch.arange(N, device=dev).view(1, N, 1)
        task = Task(
            x_support=x[:, :, :K].reshape(B, N * K, 1, *hw),  # (B, N*K, 1, H, W)
            y_support=labels.expand(B, N, K).reshape(B, N * K),
            x_query=x[:, :, K:].reshape(B, N * Q, 1, *hw),  # (B, N*Q, 1, H, W)
            y_query=labels.expand(B, N, Q).reshape(B, N * Q),
        )
        return task, classes

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Task:
        """Sample a meta-batch of ``batch_size`` tasks (see the class docstring for shapes)."""
        return self.sample_with_classes(batch_size, generator)[0]

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.split.name}: {self.n_way}-way {self.k_shot}-shot, "
                f"{self.n_query} queries/class, device={self.split.images.device})")
