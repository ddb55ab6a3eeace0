"""ProtoMAML: MAML whose output layer starts at the support prototypes (Triantafillou et al. 2020).

Triantafillou et al. (2020), "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few
Examples", section 3 ("Proto-MAML"). A Prototypical Network (Snell et al. 2017) with the squared
Euclidean distance is a linear classifier on the embedding z = f_θ(x):

    -‖z − c_c‖² = 2 c_cᵀ z − ‖c_c‖² − ‖z‖²,   so   w_c = 2 c_c,   b_c = −‖c_c‖²

give the same softmax (the ‖z‖² term is the same for every class). ProtoMAML puts that layer on top
of the backbone *before* MAML's inner loop and then adapts everything, backbone and head, with
`metalib.maml.adapt`. Zero inner steps is exactly a ProtoNet; the head has as many classes as the
task (any N, any label order), which a MAML head of fixed width cannot offer; and the meta-gradient
reaches the backbone twice: through the features and through the prototypes that set the head.

`meta_loss` is MAML's objective with that head, for a batch of tasks, with the "loop" strategy (the
reference, one task at a time) or "batched" (all tasks in one pass, `metalib.maml_batched`);
`metalib.maml_train.MAMLLearner(method="protomaml")` trains and evaluates it. Taught in notebook 09.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from .maml import LR, adapt
from .protonet import prototypes
from .tasks import Task

__all__ = ["HEAD", "proto_head", "with_head", "init_head", "meta_loss"]

HEAD = ("head.weight", "head.bias")
FEmbed = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def proto_head(z_support: torch.Tensor, y_support: torch.Tensor, n_way: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear layer equivalent to the squared-Euclidean ProtoNet: ``(W, b)`` with W = 2c, b = −‖c‖².

    Args:
        z_support: (S, D) or (B, S, D) embedded support examples; y_support: (S,) or (B, S) labels.

    Returns:
        W (N, D) or (B, N, D) and b (N,) or (B, N), differentiable with respect to ``z_support``.
    """
    c = prototypes(z_support, y_support, n_way)
    return 2 * c, -(c ** 2).sum(-1)


def with_head(fembed: FEmbed) -> FEmbed:
    """``fmodel(params, x) = z Wᵀ + b`` with z = ``fembed(params, x)``, W = params["head.weight"],
    b = params["head.bias"]; works for one task (z (n, D), W (N, D)) and batched (z (T, n, D), W (T, N, D))."""
    def fmodel(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        w, b = params["head.weight"], params["head.bias"]
        body = {n: p for n, p in params.items() if n not in HEAD}  # the backbone never sees the head's entries
        return fembed(body, x) @ w.transpose(-1, -2) + b.unsqueeze(-2)
    return fmodel


def init_head(fembed: FEmbed, params: Mapping[str, torch.Tensor], x_support: torch.Tensor,
              y_support: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
    """θ₀ of one task (or a batch of tasks): the backbone's ``params`` plus the prototype head."""
    clash = sorted(set(HEAD) & set(params))
    if clash:
        raise ValueError(f"params already contain {clash}: ProtoMAML builds its head from the prototypes; "
                         "give it a backbone without a head (Conv4(..., n_classes=None))")
    w, b = proto_head(fembed(params, x_support), y_support, n_way)
    # The inner loop differentiates with respect to θ₀'s entries as independent variables: a fresh view of
    # each, so that ∂L/∂θ holds the head fixed and ∂L/∂w holds b fixed (the head's path to θ counts only
    # in the meta-gradient, never in an inner step).
    return {n: t.view_as(t) for n, t in {**params, HEAD[0]: w, HEAD[1]: b}.items()}


def meta_loss(fembed: FEmbed, params: Mapping[str, torch.Tensor], task: Task, *, inner_lr: LR, steps: int = 1,
              first_order: bool = False, strategy: str = "loop", bfembed: FEmbed | None = None,
              n_way: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ProtoMAML's meta-loss: mean query cross-entropy after ``steps`` inner steps from the prototype head.

    Args:
        fembed: ``fembed(params, x) -> z``, the backbone for one task (e.g. `metalib.maml_batched.fast_functional`
            of a head-less `Conv4`); bfembed: the same for T tasks at once (strategy "batched").
        params: the backbone's parameters θ (no "head.*": the head comes from the prototypes).
        task: a batch of tasks (leading dimension B). n_way: default, the largest support label + 1.
        inner_lr, steps, first_order: as in `metalib.maml.adapt` (all parameters, head included, adapt).

    Returns:
        ``(loss, query logits (B, M, N))``.
    """
    if task.x_support.dim() < 2:
        raise ValueError("meta_loss expects a batch of tasks (leading dimension B); use task.select(slice(0, 1))")
    n_way = n_way or int(task.y_support.max()) + 1
    kw = dict(inner_lr=inner_lr, steps=steps, first_order=first_order)
    if strategy == "loop":
        fmodel, losses, outputs = with_head(fembed), [], []
        for b in range(task.batch_size):
            xs, ys = task.x_support[b], task.y_support[b]
            theta = adapt(fmodel, init_head(fembed, params, xs, ys, n_way), xs, ys, **kw)
            out = fmodel(theta, task.x_query[b])
            losses.append(F.cross_entropy(out, task.y_query[b]))
            outputs.append(out)
        return torch.stack(losses).mean(), torch.stack(outputs)
    if strategy == "batched":
        if bfembed is None:
            raise ValueError("strategy='batched' needs bfembed=metalib.maml_batched.batched_functional(backbone)")
        T = task.batch_size
        theta = {n: p.expand(T, *p.shape) for n, p in params.items()}  # (T, ...) views of the shared θ
        theta = init_head(bfembed, theta, task.x_support, task.y_support, n_way)  # head (T, N, D), (T, N)
        fmodel = with_head(bfembed)
        theta = adapt(fmodel, theta, task.x_support, task.y_support, batched=True, **kw)
        out = fmodel(theta, task.x_query)  # (T, M, N)
        return F.cross_entropy(out.flatten(0, 1), task.y_query.flatten(0, 1)), out
    raise ValueError(f"ProtoMAML supports strategy 'loop' or 'batched', got {strategy!r}")
