"""Accuracy bought after training: test-time augmentation and ensembles of Prototypical Networks.

Two standard ways to classify better without retraining, measured on Lake et al.'s 20 official one-shot
runs (`metalib.data.lake_runs`) in notebook 04, ``benchmarks/metric.py`` and ``python -m metalib evaluate``:

* **test-time augmentation** (TTA): embed every support and query image together with ``copies``
  random distortions of it (Koch et al.'s affine ranges, `metalib.augment`) and use the mean
  embedding, so that a prototype no longer hangs on how one drawing happened to be placed;
* **an ensemble**: average the class log-probabilities of several independently trained models
  (Dietterich 2000); their errors are partly independent, so the average errs less than each.

Both multiply the cost of a prediction (by ``copies + 1`` and by the number of models). Neither
looks at the other queries of the episode: every query is classified on its own, as in Lake et al.'s runs.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .augment import KOCH, AffineRanges, random_affine
from .protonet import ProtoNet, prototypes, similarity_logits
from .tasks import Task

__all__ = ["tta_embed", "ensemble_predictor"]


def tta_embed(embed: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, copies: int,
              generator: torch.Generator, ranges: AffineRanges = KOCH) -> torch.Tensor:
    """Mean embedding of ``x`` (..., 1, H, W) and ``copies`` random distortions of it: (..., D).

    ``copies=0`` is ``embed(x)``. The distortions are drawn from ``generator`` (on ``x``'s device),
    one fresh draw per image and copy.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    total = embed(x)
    for _ in range(copies):
        total = total + embed(random_affine(x, generator, ranges))
    return total / (copies + 1)


def ensemble_predictor(models: Sequence[ProtoNet], *, copies: int = 0, seed: int = 0,
                       n_way: int | None = None) -> Callable[[Task], torch.Tensor]:
    """A ``predict(task)`` for `metalib.evaluate_accuracy`: the mean over ``models`` of their class
    log-probabilities (B, N*Q, N), each model using ``copies`` test-time distortions per image.

    Args:
        models: trained ProtoNets (eval mode; one model is allowed: TTA alone).
        copies: distortions per image besides the original (0: no TTA).
        seed: seeds the distortions' generator, created on the first task's device.
        n_way: classes per episode (default: inferred from the support labels).
    """
    models = list(models)
    if not models:
        raise ValueError("ensemble_predictor needs at least one model")
    for m in models:
        if not isinstance(m, ProtoNet):
            raise TypeError(f"ensemble_predictor averages ProtoNet embeddings; got {type(m).__name__}")
    state: dict = {}

    def predict(task: Task) -> torch.Tensor:
        if "gen" not in state:
            state["gen"] = torch.Generator(device=task.x_query.device).manual_seed(seed)
        gen, n = state["gen"], n_way or int(task.y_support.max()) + 1
        out = 0
        for m in models:
            z_support = tta_embed(m.embed_support, task.x_support, copies, gen)  # (B, N*K, D)
            z_query = tta_embed(m.embed, task.x_query, copies, gen)  # (B, N*Q, D)
            logits = similarity_logits(z_query, prototypes(z_support, task.y_support, n), m.similarity)
            out = out + logits.log_softmax(-1)
        return out / len(models)

    return predict
