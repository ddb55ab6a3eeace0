"""Prototypical Networks (Snell, Swersky & Zemel 2017; seed §2.2).

A class is represented by the mean of its embedded support examples, the *prototype*
``c_y = 1/K sum_k f(x_k)``; a query is classified by a softmax over its similarity to each
prototype. Two similarities:

* ``"euclidean"`` (the paper): ``-||f(x) - c_y||^2``, a Bregman divergence, under which the
  class mean is exactly the point that minimises the summed divergence to the support set;
* ``"dot"`` (the seed's §2.2): ``c_y^T f(x)``, a linear classifier with weights c_y, whose
  logits grow with the norm of the embedding.

Optionally the support goes through a separate embedder g (the seed writes ``g(x_k)`` for the
support and ``f(x)`` for the query). Taught in notebook 04 (Prototypical Networks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nets import Conv4
from .tasks import Task

__all__ = ["SIMILARITIES", "prototypes", "similarity_logits", "Embedders", "ProtoNet"]

SIMILARITIES = ("euclidean", "dot")


def prototypes(z_support: torch.Tensor, y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means of embedded support examples.

    Args:
        z_support: (B, S, D) embeddings (or (S, D) for one task).
        y_support: (B, S) int64 labels in 0..n_way-1.
        n_way: number of classes N.

    Returns:
        (B, N, D) prototypes (or (N, D)).

    Raises:
        ValueError: a label outside 0..n_way-1, or a class without support examples.
    """
    if z_support.dim() == 2:
        return prototypes(z_support[None], y_support[None], n_way)[0]
    if y_support.numel() and (int(y_support.min()) < 0 or int(y_support.max()) >= n_way):
        raise ValueError(f"support labels must lie in 0..{n_way - 1}, got {int(y_support.min())}..{int(y_support.max())}")
    onehot = F.one_hot(y_support, n_way).to(z_support.dtype)  # (B, S, N)
    counts = onehot.sum(1)  # (B, N)
    if bool((counts == 0).any()):
        raise ValueError("a class has no support example, so it has no prototype; every class 0..N-1 needs >= 1")
    return onehot.transpose(1, 2) @ z_support / counts[..., None]  # (B, N, D)


def similarity_logits(z_query: torch.Tensor, protos: torch.Tensor, similarity: str = "euclidean") -> torch.Tensor:
    """Logits (B, M, N) of queries (B, M, D) against prototypes (B, N, D).

    ``"euclidean"``: ``-||z - c||^2``, expanded as ``2 z.c - |z|^2 - |c|^2`` (one matmul, no (B, M, N, D)
    tensor); ``"dot"``: ``z.c``.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    dots = z_query @ protos.transpose(-1, -2)  # (B, M, N)
    if similarity == "dot":
        return dots
    zz = (z_query ** 2).sum(-1, keepdim=True)  # (B, M, 1)
    cc = (protos ** 2).sum(-1).unsqueeze(-2)  # (B, 1, N)
    return 2 * dots - zz - cc


class Embedders(nn.Module):
    """The query embedder f and an optional separate support embedder g (Conv-4s), shared by
    `ProtoNet` and `metalib.matching.MatchingNet`; ``g`` is None when the support shares f."""

    def __init__(self, hidden: int = 64, separate_support: bool = False, batch_norm: bool = True,
                 final_pool: bool = True):
        super().__init__()
        self.f = Conv4(hidden=hidden, batch_norm=batch_norm, final_pool=final_pool)
        self.g = Conv4(hidden=hidden, batch_norm=batch_norm, final_pool=final_pool) if separate_support else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Query embedding f(x): (..., 1, 28, 28) -> (..., D)."""
        _check_images(x)
        return self.f(x)

    def embed_support(self, x: torch.Tensor) -> torch.Tensor:
        """Support embedding g(x) (= f(x) unless ``separate_support``)."""
        _check_images(x)
        return (self.g or self.f)(x)


class ProtoNet(Embedders):
    """A Prototypical Network: embedder(s) plus the nearest-prototype rule.

    Args:
        similarity: "euclidean" (paper) or "dot" (seed).
        hidden: Conv-4 filters per block (64 in the paper; embedding size 64 for 28x28).
        separate_support: embed the support with its own Conv-4 g (seed's f/g); default shares f.
        batch_norm: Conv-4 with BatchNorm.
        final_pool: False keeps Conv-4's last 3x3 map (a 576-d embedding for 28x28, `metalib.nets.Conv4`).

    ``forward(task)`` returns logits (B, N*Q, N); ``embed(x)`` maps images (..., 1, S, S) in [0, 1]
    (S = 28, or the ``image_size`` the model was trained on) to (..., D) query embeddings, so you can
    classify your own drawings by nearest prototype.
    """

    def __init__(self, similarity: str = "euclidean", hidden: int = 64, separate_support: bool = False,
                 batch_norm: bool = True, final_pool: bool = True):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        super().__init__(hidden, separate_support, batch_norm, final_pool)
        self.similarity = similarity

    def forward(self, task: Task, n_way: int | None = None) -> torch.Tensor:
        n_way = n_way or int(task.y_support.max()) + 1
        protos = prototypes(self.embed_support(task.x_support), task.y_support, n_way)  # (B, N, D)
        return similarity_logits(self.embed(task.x_query), protos, self.similarity)  # (B, M, N)


def _check_images(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x) or x.dim() < 3 or x.shape[-3] != 1:
        raise ValueError(f"expected float images (..., 1, H, W) in [0, 1] (the dataset cache's uint8 / 255), "
                         f"got dtype {x.dtype} and shape {tuple(x.shape)}")
