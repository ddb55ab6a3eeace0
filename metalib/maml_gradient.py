"""Problem 1: the MAML outer gradient through k inner steps, computed four independent ways.

With θ₀ = θ_meta and θ_{i+1} = θ_i − α∇L⁽⁰⁾(θ_i), the chain rule gives (Finn et al. 2017; the
seed's §2.3, Problem 1; derived step by step in notebook 06)

    g_MAML = (I − α∇²L⁽⁰⁾(θ₀)) (I − α∇²L⁽⁰⁾(θ₁)) ··· (I − α∇²L⁽⁰⁾(θ_{k−1})) ∇L⁽¹⁾(θ_k).

Everything here works on a flat parameter vector θ of shape (n,) and losses ``L(θ) -> scalar``
(`flatten_model` turns a network and a task into such losses). The inner loss may be one
function, or a list of k functions when each inner step uses a new mini-batch (then ∇²L⁽⁰⁾ at
step i is the Hessian of the i-th loss). The four computations share no code beyond taking a
gradient:

1. `g_maml_hessian`: explicit Hessians and the matrix product (small n only);
2. `g_maml_hvp`: reverse accumulation with Hessian-vector products, never an n × n matrix;
3. `g_maml_autograd`: autograd through the unrolled inner loop (``create_graph=True``);
4. `g_maml_finite_differences`: central differences of θ₀ ↦ L⁽¹⁾(θ_k(θ₀));

plus `g_maml_quadratic`, a closed form for L(θ) = ½θᵀAθ − bᵀθ, and `g_first_order` (FOMAML).
`metalib.maml.meta_loss` is checked against method 3, so the training code is what was derived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

__all__ = ["Quadratic", "inner_losses", "inner_trajectory", "hvp", "g_maml_hessian", "g_maml_hvp",
           "g_maml_autograd", "g_maml_finite_differences", "g_maml_quadratic", "g_first_order",
           "relative_error", "flatten_model"]

Loss = Callable[[torch.Tensor], torch.Tensor]
InnerLoss = Loss | Sequence[Loss]


@dataclass(frozen=True)
class Quadratic:
    """L(θ) = ½ θᵀAθ − bᵀθ with symmetric A: gradient Aθ − b, Hessian A."""
    A: torch.Tensor
    b: torch.Tensor

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * theta @ self.A @ theta - self.b @ theta

    @staticmethod
    def random(n: int, *, generator: torch.Generator, eig: tuple[float, float] = (0.5, 2.0),
               dtype: torch.dtype = torch.float64) -> "Quadratic":
        """A random quadratic whose Hessian has eigenvalues uniform in ``eig`` (random basis)."""
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
        lam = torch.empty(n, dtype=dtype).uniform_(*eig, generator=generator)
        A = q @ torch.diag(lam) @ q.T
        return Quadratic(0.5 * (A + A.T), torch.randn(n, generator=generator, dtype=dtype))


def inner_losses(inner: InnerLoss, k: int) -> list[Loss]:
    """The k inner losses: the same one k times, or the given list (checked to have length k)."""
    if k < 0:
        raise ValueError(f"k (inner steps) must be >= 0, got {k}")
    if callable(inner):
        return [inner] * k
    inner = list(inner)
    if len(inner) != k:
        raise ValueError(f"got {len(inner)} inner losses (one per mini-batch) but k={k} inner steps")
    return inner


def _grad(loss: Loss, theta: torch.Tensor) -> torch.Tensor:
    return torch.func.grad(loss)(theta)


def inner_trajectory(inner: InnerLoss, theta0: torch.Tensor, alpha: float, k: int) -> list[torch.Tensor]:
    """[θ₀, θ₁, ..., θ_k] of the inner loop, as plain (non-differentiable) tensors."""
    _check_theta(theta0)
    thetas = [theta0.detach()]
    for loss in inner_losses(inner, k):
        thetas.append(thetas[-1] - alpha * _grad(loss, thetas[-1]))
    return thetas


def _hessian(loss: Loss, theta: torch.Tensor) -> torch.Tensor:
    """∇²L(θ) as an (n, n) matrix: the Jacobian of the gradient, reverse over reverse (this avoids
    forward mode, whose first use in a process costs seconds of TorchScript compilation)."""
    return torch.func.jacrev(torch.func.grad(loss))(theta)


def hvp(loss: Loss, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇²L(θ) v without forming ∇²L: the vector-Jacobian product of θ ↦ ∇L(θ) with v (∇²L is
    symmetric). Reverse-over-reverse, which works for every op autograd supports."""
    _, vjp_fn = torch.func.vjp(torch.func.grad(loss), theta)
    return vjp_fn(v)[0]


def g_maml_hessian(inner: InnerLoss, outer: Loss, theta0: torch.Tensor, alpha: float, k: int, *,
                   max_params: int = 4096) -> torch.Tensor:
    """Method 1: form each I − α∇²L⁽⁰⁾(θ_i), multiply them in order i = 0..k−1, apply to ∇L⁽¹⁾(θ_k)."""
    n = _check_theta(theta0)
    if n > max_params:
        gib = n * n * theta0.element_size() / 2**30
        raise ValueError(f"g_maml_hessian forms n x n Hessians: n={n} parameters need {gib:.2f} GiB each "
                         f"(limit max_params={max_params}); use g_maml_hvp, which never forms one")
    thetas = inner_trajectory(inner, theta0, alpha, k)
    eye = torch.eye(n, dtype=theta0.dtype, device=theta0.device)
    product = eye
    for loss, theta in zip(inner_losses(inner, k), thetas):
        product = product @ (eye - alpha * _hessian(loss, theta))  # (n, n)
    return product @ _grad(outer, thetas[-1])


def g_maml_hvp(inner: InnerLoss, outer: Loss, theta0: torch.Tensor, alpha: float, k: int) -> torch.Tensor:
    """Method 2: v ← ∇L⁽¹⁾(θ_k); for i = k−1, ..., 0: v ← v − α ∇²L⁽⁰⁾(θ_i) v. Memory O(n)."""
    thetas = inner_trajectory(inner, theta0, alpha, k)
    losses = inner_losses(inner, k)
    v = _grad(outer, thetas[-1])
    for i in reversed(range(k)):
        v = v - alpha * hvp(losses[i], thetas[i], v)
    return v


def g_maml_autograd(inner: InnerLoss, outer: Loss, theta0: torch.Tensor, alpha: float, k: int) -> torch.Tensor:
    """Method 3: backpropagate L⁽¹⁾(θ_k) through the unrolled inner loop (memory grows with k)."""
    _check_theta(theta0)
    start = theta0.detach().clone().requires_grad_(True)
    theta = start
    with torch.enable_grad():
        for loss in inner_losses(inner, k):
            (g,) = torch.autograd.grad(loss(theta), theta, create_graph=True)
            theta = theta - alpha * g
        (g_meta,) = torch.autograd.grad(outer(theta), start)
    return g_meta


def g_maml_finite_differences(inner: InnerLoss, outer: Loss, theta0: torch.Tensor, alpha: float, k: int, *,
                              eps: float = 1e-5, max_params: int = 2048) -> torch.Tensor:
    """Method 4: (F(θ₀ + εe_j) − F(θ₀ − εe_j)) / 2ε for every coordinate j, F(θ₀) = L⁽¹⁾(θ_k(θ₀)).

    Needs float64: in float32 the rounding error of F (~1e-7 relative) divided by ε swamps the
    derivative. Costs 2n inner loops, so n is limited to ``max_params``.
    """
    n = _check_theta(theta0)
    if theta0.dtype != torch.float64:
        raise ValueError(f"finite differences need float64 parameters (got {theta0.dtype}): pass theta0.double() "
                         "and losses that work in float64")
    if n > max_params:
        raise ValueError(f"finite differences take 2n={2 * n} inner loops; n={n} > max_params={max_params}")

    def objective(theta: torch.Tensor) -> float:
        return float(outer(inner_trajectory(inner, theta, alpha, k)[-1]))

    g = torch.empty_like(theta0)
    for j in range(n):
        step = torch.zeros_like(theta0)
        step[j] = eps
        g[j] = (objective(theta0 + step) - objective(theta0 - step)) / (2 * eps)
    return g


def g_maml_quadratic(inner: Quadratic, outer: Quadratic, theta0: torch.Tensor, alpha: float, k: int) -> torch.Tensor:
    """Closed form for quadratic losses (inner ½θᵀAθ − bᵀθ, outer ½θᵀCθ − dᵀθ).

    With M = I − αA and θ* = A⁻¹b, gradient descent gives θ_k = θ* + M^k (θ₀ − θ*), so
    dθ_k/dθ₀ = M^k and g_MAML = M^k (Cθ_k − d) (M is symmetric).
    """
    n = _check_theta(theta0)
    M = torch.eye(n, dtype=theta0.dtype, device=theta0.device) - alpha * inner.A
    Mk = torch.linalg.matrix_power(M, k)
    theta_star = torch.linalg.solve(inner.A, inner.b)
    theta_k = theta_star + Mk @ (theta0 - theta_star)
    return Mk @ (outer.A @ theta_k - outer.b)


def g_first_order(inner: InnerLoss, outer: Loss, theta0: torch.Tensor, alpha: float, k: int) -> torch.Tensor:
    """First-order MAML: ∇L⁽¹⁾(θ_k), i.e. every I − α∇²L⁽⁰⁾ replaced by I."""
    return _grad(outer, inner_trajectory(inner, theta0, alpha, k)[-1])


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """‖approx − exact‖ / ‖exact‖ (the absolute error when ‖exact‖ = 0)."""
    diff = float(torch.linalg.vector_norm((approx - exact).double()))
    scale = float(torch.linalg.vector_norm(exact.double()))
    return diff / scale if scale > 0 else diff


def flatten_model(fmodel: Callable, params: Mapping[str, torch.Tensor],
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Turn a functional model into losses of a flat parameter vector.

    Args:
        fmodel: ``fmodel(params, x) -> output`` (see `metalib.maml.functional`).
        params: name -> tensor; their order fixes the layout of the flat vector.
        loss_fn: ``loss_fn(output, y) -> scalar``.

    Returns:
        ``(theta0, loss_on, unflatten)``: the flat vector (n,), ``loss_on(x, y)`` which returns
        the loss θ ↦ loss_fn(fmodel(unflatten(θ), x), y), and ``unflatten(θ) -> dict``.
    """
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [math.prod(s) for s in shapes]
    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])  # (n,)

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: chunk.view(s) for n, chunk, s in zip(names, theta.split(sizes), shapes)}

    def loss_on(x: torch.Tensor, y: torch.Tensor) -> Loss:
        return lambda theta: loss_fn(fmodel(unflatten(theta), x), y)

    return theta0, loss_on, unflatten


def _check_theta(theta0: torch.Tensor) -> int:
    if not isinstance(theta0, torch.Tensor) or theta0.dim() != 1:
        shape = tuple(theta0.shape) if isinstance(theta0, torch.Tensor) else type(theta0).__name__
        raise ValueError(f"theta0 must be a flat parameter vector of shape (n,), got {shape}: "
                         "use metalib.maml_gradient.flatten_model for a network")
    return theta0.numel()
