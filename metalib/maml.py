"""MAML's inner loop and meta-loss as pure functions over a parameter dict.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", Algorithm 1; the seed's §2.3. The inner loop takes ``steps`` gradient steps on a task's
support set, θ_{i+1} = θ_i − α ∇L⁽⁰⁾(θ_i); the meta-loss is the query loss L⁽¹⁾(θ_k) averaged
over the meta-batch. Differentiating it with respect to θ₀ gives exactly the g_MAML derived in
Problem 1 (notebook 06 checks this against Hessian products and finite differences); with
``first_order=True`` the inner gradients are treated as constants and the meta-gradient becomes
∇L⁽¹⁾(θ_k) (FOMAML).

Models are used functionally: ``fmodel(params, x)`` with ``params`` a dict of tensors
(`functional` makes one from an ``nn.Module`` with ``torch.func.functional_call``). Nothing is
written into ``module._parameters``. Tasks of a meta-batch are processed one at a time here (the
reference strategy; it keeps BatchNorm statistics per task).

Taught in notebooks 05 (MAML) and 06 (Problem 1).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import Task

__all__ = ["functional", "adapt", "meta_loss"]

Params = dict[str, torch.Tensor]
FModel = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def functional(model: nn.Module) -> tuple[FModel, Params]:
    """``(fmodel, params)`` for a module: ``fmodel(params, x)`` runs it with the given parameters.

    ``params`` are the module's own parameters (so an optimiser over ``model.parameters()``
    updates them); buffers (e.g. BatchNorm running statistics) stay in the module.
    """
    def fmodel(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(params), (x,))
    return fmodel, dict(model.named_parameters())


def adapt(fmodel: FModel, params: Mapping[str, torch.Tensor], x_support: torch.Tensor,
          y_support: torch.Tensor, *, inner_lr: float, steps: int = 1, first_order: bool = False,
          loss_fn: LossFn = F.cross_entropy) -> Params:
    """Adapted parameters θ_k after ``steps`` gradient steps on one task's support set.

    Args:
        fmodel: ``fmodel(params, x) -> output``.
        params: θ₀ (name -> tensor); those that require grad are adapted, the others are kept.
        x_support, y_support: the task's D^tr (no batch-of-tasks dimension).
        inner_lr: α.
        steps: k >= 0.
        first_order: drop the second-order terms (FOMAML): the inner gradients are detached.
        loss_fn: ``loss_fn(output, y)``, e.g. cross-entropy (default) or MSE.

    Returns:
        θ_k as a new dict; differentiable with respect to ``params`` (unless first order, where
        dθ_k/dθ₀ = I).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    names = [n for n, p in params.items() if p.requires_grad]
    if steps and not names:
        raise ValueError("no parameter requires grad, so there is nothing to adapt: "
                         "call .requires_grad_() on the parameters to adapt")
    theta = dict(params)
    for _ in range(steps):
        loss = loss_fn(fmodel(theta, x_support), y_support)
        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=not first_order)
        if first_order:
            grads = [g.detach() for g in grads]
        theta = {**theta, **{n: theta[n] - inner_lr * g for n, g in zip(names, grads)}}
    return theta


def meta_loss(fmodel: FModel, params: Mapping[str, torch.Tensor], task: Task, *, inner_lr: float,
              steps: int = 1, first_order: bool = False, loss_fn: LossFn = F.cross_entropy
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean query loss after adaptation over a meta-batch: the MAML objective.

    Args:
        task: a batched `Task` (leading dimension B, the meta-batch).
        other arguments: as in `adapt`.

    Returns:
        ``(loss, outputs)``: the scalar mean of L⁽¹⁾(θ_k) over the B tasks, and the query
        outputs stacked to (B, M, ...) (for accuracy).
    """
    if task.x_support.dim() < 2:
        raise ValueError("meta_loss expects a batch of tasks (leading dimension B); "
                         "for one task use task.select(slice(0, 1)) or adapt() directly")
    losses, outputs = [], []
    for b in range(task.batch_size):
        theta = adapt(fmodel, params, task.x_support[b], task.y_support[b], inner_lr=inner_lr,
                      steps=steps, first_order=first_order, loss_fn=loss_fn)
        out = fmodel(theta, task.x_query[b])
        losses.append(loss_fn(out, task.y_query[b]))
        outputs.append(out)
    return torch.stack(losses).mean(), torch.stack(outputs)
