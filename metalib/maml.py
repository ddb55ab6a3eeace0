"""MAML and its family as pure functions over a parameter dict: one inner loop, five methods.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", Algorithm 1; the seed's §2.3. The inner loop takes ``steps`` gradient steps on a task's
support set, θ_{i+1} = θ_i − α ∇L⁽⁰⁾(θ_i); the meta-loss is the query loss L⁽¹⁾(θ_k) averaged
over the meta-batch. Differentiating it with respect to θ₀ gives exactly the g_MAML derived in
Problem 1 (notebook 06 checks this against Hessian products and finite differences).

The family, as options of the same `adapt` / `meta_loss`, not copies:

* MAML: second order through all k inner steps (default);
* FOMAML: ``first_order=True``, the inner gradients are constants, the meta-gradient is ∇L⁽¹⁾(θ_k);
* ANIL (Raghu et al. 2020): ``names=`` only the head's parameters are adapted;
* Meta-SGD (Li et al. 2017): ``inner_lr=`` a dict of learned per-parameter learning rates;
* Reptile (Nichol et al. 2018): `reptile_loss`, first-order steps (SGD, or the paper's Adam with β1 = 0,
  on minibatches of the pooled support and query examples) and the direction θ − θ_k.

Strategies for a meta-batch (``strategy=``), all giving the same meta-gradient (tests/test_maml.py):
"loop" runs the tasks one at a time (the reference; any module); "batched" runs all T tasks in
one pass with per-task parameters (`metalib.maml_batched`: grouped convolutions, per-task
BatchNorm statistics); "vmap" uses ``torch.func.vmap`` over ``torch.func.grad`` (any module
without BatchNorm: through BatchNorm its second-order gradient is wrong in torch 2.13, a relative
error of 2e-3 to 1e-2 even in float64, so `MAMLLearner` refuses that combination). ``benchmarks/maml_speed.py`` measures which is fastest where.

Models are used functionally: ``fmodel(params, x)`` with ``params`` a dict of tensors
(`functional` makes one from an ``nn.Module`` with ``torch.func.functional_call``). Nothing is
written into ``module._parameters``.

Taught in notebooks 05 (MAML) and 06 (Problem 1).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import Task

__all__ = ["STRATEGIES", "functional", "sgd_step", "adapt", "meta_loss", "reptile_loss"]

STRATEGIES = ("loop", "batched", "vmap")
INNER_OPTIMIZERS = ("sgd", "adam")
ADAM_BETA2_EPS = (0.999, 1e-8)  # the inner Adam's β2 and ε (β1 = 0, as Nichol et al.'s)
Params = dict[str, torch.Tensor]
FModel = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LR = float | Mapping[str, torch.Tensor]


def functional(model: nn.Module) -> tuple[FModel, Params]:
    """``(fmodel, params)`` for a module: ``fmodel(params, x)`` runs it with the given parameters.

    ``params`` are the module's own parameters (so an optimiser over ``model.parameters()``
    updates them); buffers (e.g. BatchNorm running statistics) stay in the module.
    """
    def fmodel(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(params), (x,))
    return fmodel, dict(model.named_parameters())


def _adapted_names(params: Mapping[str, torch.Tensor], names: Sequence[str] | None, steps: int) -> list[str]:
    if names is None:
        names = [n for n, p in params.items() if p.requires_grad]
    else:
        unknown = sorted(set(names) - set(params))
        if unknown:
            raise ValueError(f"names {unknown} are not parameters; parameters are {sorted(params)}")
        names = list(names)
    if steps and not names:
        raise ValueError("no parameter requires grad, so there is nothing to adapt: "
                         "call .requires_grad_() on the parameters to adapt")
    return names


def _rate(inner_lr: LR, name: str) -> float | torch.Tensor:
    if isinstance(inner_lr, Mapping):
        if name not in inner_lr:
            raise ValueError(f"inner_lr is a dict of per-parameter rates (Meta-SGD) but has none for {name!r}")
        return inner_lr[name]
    return inner_lr


def sgd_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], inner_lr: LR) -> Params:
    """One inner step θ' = θ − α ⊙ g for every parameter named in ``grads`` (a new dict, nothing in place).

    ``inner_lr`` is MAML's scalar α or, for Meta-SGD (Li et al. 2017; notebook 09), a dict of learned
    per-parameter rates of the parameters' shapes; the result is differentiable with respect to the
    parameters, the gradients and the rates.
    """
    return {n: params[n] - _rate(inner_lr, n) * g for n, g in grads.items()}


def adapt(fmodel: FModel, params: Mapping[str, torch.Tensor], x_support: torch.Tensor,
          y_support: torch.Tensor, *, inner_lr: LR, steps: int = 1, first_order: bool = False,
          loss_fn: LossFn = F.cross_entropy, names: Sequence[str] | None = None,
          batched: bool = False, optimizer: str = "sgd", batch_size: int | None = None) -> Params:
    """Adapted parameters θ_k after ``steps`` gradient steps on one task's support set.

    Args:
        fmodel: ``fmodel(params, x) -> output``.
        params: θ₀ (name -> tensor).
        x_support, y_support: the task's D^tr (no batch-of-tasks dimension unless ``batched``).
        inner_lr: α, or a dict name -> tensor of per-parameter rates (Meta-SGD), broadcastable.
        steps: k >= 0.
        first_order: drop the second-order terms (FOMAML): the inner gradients are detached.
        loss_fn: ``loss_fn(output, y)`` averaging over examples, e.g. cross-entropy (default) or MSE.
        names: the parameters to adapt (default: all that require grad). ANIL: the head's.
        batched: ``fmodel`` runs T tasks at once (`metalib.maml_batched`): x (T, n, ...), every
            adapted parameter (T, ...); the loss is the sum of the T tasks' mean losses, so each
            task's gradient is its own.
        optimizer: "sgd" (θ ← θ − α g, the MAML family) or "adam": Reptile's inner optimiser (Nichol
            et al. 2018 use Adam with β1 = 0), β2 = 0.999, ε = 1e-8 as ``torch.optim.Adam``, fresh state
            for every call (every task), first order only.
        batch_size: None: every step on all the examples given. An int b: step i on the i-th block of b
            consecutive examples (cycled; b must divide their number), as Reptile's inner minibatches.

    Returns:
        θ_k as a new dict; differentiable with respect to ``params`` (unless first order, where
        dθ_k/dθ₀ = I).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {INNER_OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "adam" and not first_order:
        raise ValueError("the inner Adam is first order only (Reptile, FOMAML, testing): pass first_order=True "
                         "or use optimizer='sgd' for second-order MAML")
    names = _adapted_names(params, names, steps)
    n_examples = x_support.shape[1 if batched else 0]
    if batch_size is not None and (batch_size < 1 or n_examples % batch_size):
        raise ValueError(f"batch_size={batch_size} must divide the {n_examples} examples per task")
    theta, v = dict(params), {}
    for i in range(steps):
        x, y = x_support, y_support
        if batch_size is not None:
            lo = (i * batch_size) % n_examples
            x, y = (x[:, lo:lo + batch_size], y[:, lo:lo + batch_size]) if batched else (x[lo:lo + batch_size],
                                                                                       y[lo:lo + batch_size])
        out = fmodel(theta, x)
        loss = loss_fn(out.flatten(0, 1), y.flatten(0, 1)) * out.shape[0] if batched else loss_fn(out, y)
        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=not first_order)
        if first_order:
            grads = [g.detach() for g in grads]
        if optimizer == "adam":  # β1 = 0: the step is α g / (sqrt(v / (1 - β2^t)) + ε)
            b2, eps = ADAM_BETA2_EPS
            v = {n: b2 * v.get(n, 0) + (1 - b2) * g * g for n, g in zip(names, grads)}
            grads = [g / ((v[n] / (1 - b2 ** (i + 1))).sqrt() + eps) for n, g in zip(names, grads)]
        theta = {**theta, **sgd_step(theta, dict(zip(names, grads)), inner_lr)}
    return theta


def meta_loss(fmodel: FModel, params: Mapping[str, torch.Tensor], task: Task, *, inner_lr: LR,
              steps: int = 1, first_order: bool = False, loss_fn: LossFn = F.cross_entropy,
              names: Sequence[str] | None = None, strategy: str = "loop",
              bfmodel: FModel | None = None, optimizer: str = "sgd") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean query loss after adaptation over a meta-batch: the MAML objective.

    Args:
        task: a batched `Task` (leading dimension B, the meta-batch).
        strategy: "loop" (reference), "batched" (needs ``bfmodel`` from
            `metalib.maml_batched.batched_functional`) or "vmap" (``torch.func``).
        other arguments: as in `adapt`.

    Returns:
        ``(loss, outputs)``: the scalar mean of L⁽¹⁾(θ_k) over the B tasks, and the query
        outputs stacked to (B, M, ...) (for accuracy).
    """
    if task.x_support.dim() < 2:
        raise ValueError("meta_loss expects a batch of tasks (leading dimension B); "
                         "for one task use task.select(slice(0, 1)) or adapt() directly")
    kw = dict(inner_lr=inner_lr, steps=steps, first_order=first_order, loss_fn=loss_fn, names=names,
              optimizer=optimizer)
    if strategy == "loop":
        losses, outputs = [], []
        for b in range(task.batch_size):
            theta = adapt(fmodel, params, task.x_support[b], task.y_support[b], **kw)
            out = fmodel(theta, task.x_query[b])
            losses.append(loss_fn(out, task.y_query[b]))
            outputs.append(out)
        return torch.stack(losses).mean(), torch.stack(outputs)
    if strategy == "batched":
        if bfmodel is None:
            raise ValueError("strategy='batched' needs bfmodel=metalib.maml_batched.batched_functional(model)")
        T = task.batch_size
        theta = {n: p.expand(T, *p.shape) for n, p in params.items()}  # (T, ...) views of the shared θ
        theta = adapt(bfmodel, theta, task.x_support, task.y_support, batched=True,
                      **{**kw, "names": _adapted_names(params, names, steps)})
        out = bfmodel(theta, task.x_query)  # (T, M, ...)
        return loss_fn(out.flatten(0, 1), task.y_query.flatten(0, 1)), out
    if strategy == "vmap":
        return _vmap_meta_loss(fmodel, params, task, **kw)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def _vmap_meta_loss(fmodel, params, task, *, inner_lr, steps, first_order, loss_fn, names, optimizer):
    """``torch.func``: vmap over tasks of (k steps of torch.func.grad, then the query loss)."""
    if optimizer != "sgd":
        raise ValueError(f"strategy='vmap' runs SGD inner steps only; use strategy='loop' for optimizer={optimizer!r}")
    names = _adapted_names(params, names, steps)

    def one_task(xs, ys, xq, yq):
        theta = dict(params)
        for _ in range(steps):
            def support_loss(sub):
                return loss_fn(fmodel({**theta, **sub}, xs), ys)
            grads = torch.func.grad(support_loss)({n: theta[n] for n in names})
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            theta = {**theta, **{n: theta[n] - _rate(inner_lr, n) * grads[n] for n in names}}
        out = fmodel(theta, xq)
        return loss_fn(out, yq), out

    losses, outputs = torch.func.vmap(one_task)(*task)
    return losses.mean(), outputs


def reptile_loss(fmodel: FModel, params: Mapping[str, torch.Tensor], task: Task, *, inner_lr: float,
                 steps: int, loss_fn: LossFn = F.cross_entropy, names: Sequence[str] | None = None,
                 strategy: str = "loop", bfmodel: FModel | None = None, optimizer: str = "sgd",
                 inner_batch: int | None = None, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reptile (Nichol, Achiam & Schulman 2018) as a loss that ``.backward()`` understands.

    Each task b takes ``steps`` first-order steps of ``optimizer`` (see `adapt`), reaching φ_b; Reptile
    moves θ towards their mean φ̄: θ ← θ + ε (φ̄ − θ). The returned loss has the value of the query
    loss at the φ_b (for logging) and the gradient θ − φ̄, so one ``torch.optim.SGD`` step with
    learning rate ε is exactly Reptile's update (Adam on it is the paper's "treat θ − φ as a gradient"
    variant).

    Args:
        inner_batch: None: every inner step on the support set (K shots per class). An int b: the
            paper's recipe, where the inner loop trains on more examples per class than the test's
            K ("train shots"): the support and query examples of each task are pooled, shuffled by one
            ``torch.randperm(n, generator=generator)`` per call (the same order for the tasks of the
            call), and step i uses the i-th block of b examples (cycled). The query set is then no
            held-out set: the logged loss is a training loss.
        other arguments: as in `adapt` / `meta_loss`.

    Returns:
        ``(loss, query outputs)`` like `meta_loss`.
    """
    if steps < 1:
        raise ValueError(f"Reptile needs at least one inner step, got steps={steps}")
    if isinstance(inner_lr, Mapping):
        raise ValueError("Reptile takes one inner learning rate (a float), not per-parameter rates")
    names = _adapted_names(params, names, steps)
    start = {n: p.detach().requires_grad_(n in names) for n, p in params.items()}  # no graph to θ
    kw = dict(inner_lr=inner_lr, steps=steps, first_order=True, loss_fn=loss_fn, names=names,
              optimizer=optimizer, batch_size=inner_batch)
    xs, ys = task.x_support, task.y_support
    if inner_batch is not None:
        xs, ys = torch.cat([xs, task.x_query], 1), torch.cat([ys, task.y_query], 1)
        perm = torch.randperm(xs.shape[1], generator=generator).to(xs.device)
        xs, ys = xs[:, perm], ys[:, perm]
    T = task.batch_size
    if strategy == "loop":
        phis = [adapt(fmodel, start, xs[b], ys[b], **kw) for b in range(T)]
        phi = {n: torch.stack([ph[n].detach() for ph in phis]) for n in names}  # (T, ...)
        with torch.no_grad():
            outputs = torch.stack([fmodel(ph, task.x_query[b]) for b, ph in enumerate(phis)])
    elif strategy == "batched":
        if bfmodel is None:
            raise ValueError("strategy='batched' needs bfmodel=metalib.maml_batched.batched_functional(model)")
        theta = adapt(bfmodel, {n: p.expand(T, *p.shape) for n, p in start.items()}, xs, ys, batched=True, **kw)
        phi = {n: theta[n].detach() for n in names}
        with torch.no_grad():
            outputs = bfmodel(theta, task.x_query)
    else:
        raise ValueError(f"Reptile supports strategy 'loop' or 'batched', got {strategy!r}")
    with torch.no_grad():
        query = loss_fn(outputs.flatten(0, 1), task.y_query.flatten(0, 1))
    # d/dθ of Σ <θ, stopgrad(θ − φ̄)> is θ − φ̄; adding it minus its value keeps the loss value
    surrogate = sum((params[n] * (params[n].detach() - phi[n].mean(0))).sum() for n in names)
    return query + surrogate - surrogate.detach(), outputs
