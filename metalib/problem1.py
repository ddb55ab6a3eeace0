"""Problem 1's experiments: test problems, the agreement table, first-order error and cost vs k.

Builds on `metalib.maml_gradient` (the four computations of g_MAML) and `metalib.maml` (the
training code, which must give the same gradient). The seed's §2.3, Problem 1; notebook 06 and
benchmarks/maml_gradient.py print what these functions return, and tests/test_maml_gradient.py
asserts the tolerances below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import maml, maml_gradient as mg
from .data.sinusoid import SinusoidTasks
from .nets import MLP
from .profiling import measure

__all__ = ["Problem1Config", "Problem", "quadratic_problem", "regression_problem", "METHODS", "TOLERANCES", "agreement",
           "agreement_table", "first_order_errors", "cost_vs_k"]

METHODS: dict[str, Callable] = {
    "explicit Hessians": mg.g_maml_hessian,
    "Hessian-vector products": mg.g_maml_hvp,
    "autograd (unrolled)": mg.g_maml_autograd,
}
# Largest relative error accepted against the other exact computations (float64).
TOLERANCES = {**{m: 1e-10 for m in METHODS}, "closed form": 1e-10, "metalib.maml.meta_loss": 1e-10,
              "finite differences": 1e-6}


@dataclass(frozen=True)
class Problem1Config:
    """Sizes of notebook 06's experiments (quick mode shrinks them, same code).

    Attributes:
        agreement_ks: inner-step counts k of the agreement table.
        fo_alphas, fo_ks: the grid of inner step sizes α and step counts k for the first-order error.
        cost_ks: k values of the time/memory measurement.
        cost_hidden: hidden widths of the tanh MLP timed there (n = 1761 parameters for (40, 40)).
        cost_support: support points per task there (activations, hence autograd memory, scale with it).
        hessian_max_k: largest k timed for explicit Hessians (each one is n x n and slow to build).
        repeats: timing repeats (best of).
    """
    agreement_ks: tuple[int, ...] = (1, 2, 5)
    fo_alphas: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
    fo_ks: tuple[int, ...] = (1, 2, 5, 10)
    cost_ks: tuple[int, ...] = (1, 2, 4, 8, 16)
    cost_hidden: tuple[int, ...] = (40, 40)
    cost_support: int = 100
    hessian_max_k: int = 4
    repeats: int = 3

    def quick_overrides(self) -> dict:
        return {"agreement_ks": (1, 2), "fo_ks": (1, 2, 5), "cost_ks": (1, 2, 4), "cost_hidden": (20, 20),
                "hessian_max_k": 2, "repeats": 1}


@dataclass(frozen=True)
class Problem:
    """One test problem: losses of a flat θ, the start θ₀ and the inner step size α.

    ``closed_form(k)`` is the exact g_MAML where one exists (quadratics); ``library(k)`` is
    `metalib.maml`'s meta-gradient, flattened, where the problem comes from a network.
    ``inner`` is one loss, or a function k -> list of k losses (a new mini-batch every step).
    """
    name: str
    inner: Callable
    outer: Callable
    theta0: torch.Tensor
    alpha: float
    per_step_batches: bool = False
    closed_form: Callable[[int], torch.Tensor] | None = None
    library: Callable[[int], torch.Tensor] | None = None

    def inner_for(self, k: int):
        return self.inner(k) if self.per_step_batches else self.inner


def quadratic_problem(n: int = 6, *, seed: int = 0, alpha: float = 0.3) -> Problem:
    """Inner ½θᵀAθ − bᵀθ and a different outer quadratic, Hessian eigenvalues in [0.5, 2]."""
    gen = torch.Generator().manual_seed(seed)
    inner, outer = mg.Quadratic.random(n, generator=gen), mg.Quadratic.random(n, generator=gen)
    theta0 = torch.randn(n, generator=gen, dtype=torch.float64)
    return Problem(f"quadratic (n={n})", inner, outer, theta0, alpha,
                   closed_form=lambda k: mg.g_maml_quadratic(inner, outer, theta0, alpha, k))


def regression_problem(*, seed: int = 0, hidden: Sequence[int] = (10, 10), k_support: int = 10,
                       k_query: int = 10, alpha: float = 0.05, per_step_batches: bool = False,
                       max_steps: int = 5) -> Problem:
    """A tanh MLP on one sinusoid task (MSE), float64. With ``per_step_batches`` inner step i
    uses its own K support points (up to ``max_steps`` steps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # nn.Linear draws its initial weights from the global RNG
        torch.manual_seed(seed)
        net = MLP(1, list(hidden), 1, activation=nn.Tanh).double()
    fmodel, params = maml.functional(net)
    batches = max_steps if per_step_batches else 1
    task = SinusoidTasks().sample_with_params(1, k_support * batches, k_query, generator=gen,
                                            dtype=torch.float64)[0].select(0)
    theta0, loss_on, _ = mg.flatten_model(fmodel, params, F.mse_loss)
    outer = loss_on(task.x_query, task.y_query)
    xs, ys = task.x_support.split(k_support), task.y_support.split(k_support)  # batches x (K, 1)
    n = theta0.numel()
    if per_step_batches:
        def inner(k: int):
            if k > max_steps:
                raise ValueError(f"this problem has {max_steps} mini-batches; build it with max_steps >= {k}")
            return [loss_on(xs[i], ys[i]) for i in range(k)]
        return Problem(f"tanh MLP, new batch each step (n={n})", inner, outer, theta0, alpha, True)

    def library(k: int) -> torch.Tensor:
        loss, _ = maml.meta_loss(fmodel, params, task.select(None), inner_lr=alpha, steps=k, loss_fn=F.mse_loss)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])
    return Problem(f"tanh MLP regression (n={n})", loss_on(xs[0], ys[0]), outer, theta0, alpha, library=library)


def default_problems() -> list[Problem]:
    return [quadratic_problem(), regression_problem(), regression_problem(per_step_batches=True, seed=1)]


def agreement(problems: Sequence[Problem] | None = None, ks: Sequence[int] = (1, 2, 5)) -> list[dict]:
    """Every computation of g_MAML on every problem and k, with its largest relative error
    against the *other* exact computations (methods 1-3, and the closed form where it exists).

    Returns rows ``{"problem", "method", "k", "rel_error"}``.
    """
    rows = []
    for prob in problems if problems is not None else default_problems():
        for k in ks:
            args = (prob.inner_for(k), prob.outer, prob.theta0, prob.alpha, k)
            exact = {m: fn(*args) for m, fn in METHODS.items()}
            if prob.closed_form is not None:
                exact["closed form"] = prob.closed_form(k)
            others = {"finite differences": mg.g_maml_finite_differences(*args)}
            if prob.library is not None:
                others["metalib.maml.meta_loss"] = prob.library(k)
            for name, g in {**exact, **others}.items():
                err = max(mg.relative_error(g, ref) for m, ref in exact.items() if m != name)
                rows.append({"problem": prob.name, "method": name, "k": k, "rel_error": err})
    return rows


def agreement_table(rows: Sequence[dict]) -> str:
    """Markdown table: method x k -> largest relative error over the problems, and its tolerance."""
    ks = sorted({r["k"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " | tolerance |",
             "|---|" + "---|" * (len(ks) + 1)]
    for m in methods:
        worst = [max(r["rel_error"] for r in rows if r["method"] == m and r["k"] == k) for k in ks]
        lines.append(f"| {m} | " + " | ".join(f"{e:.1e}" for e in worst) + f" | {TOLERANCES[m]:.0e} |")
    return "\n".join(lines)


def first_order_errors(problem: Problem, alphas: Sequence[float], ks: Sequence[int]) -> torch.Tensor:
    """‖g − g_FO‖ / ‖g‖ for every (α, k): a tensor (len(alphas), len(ks)); g by HVP."""
    out = torch.empty(len(alphas), len(ks), dtype=torch.float64)
    for i, alpha in enumerate(alphas):
        for j, k in enumerate(ks):
            args = (problem.inner_for(k), problem.outer, problem.theta0, alpha, k)
            out[i, j] = mg.relative_error(mg.g_first_order(*args), mg.g_maml_hvp(*args))
    return out


def cost_vs_k(problem: Problem, ks: Sequence[int], methods: dict[str, Callable] | None = None, *,
              repeats: int = 3, hessian_max_k: int | None = None, progress: bool = True) -> list[dict]:
    """Seconds (best of ``repeats``) and peak extra memory (MiB) per meta-gradient, per method and k.

    Explicit Hessians are skipped for k > ``hessian_max_k`` (each costs n Hessian-vector products).
    """
    from tqdm.auto import tqdm

    methods = methods or {**METHODS, "first order": mg.g_first_order}
    rows = []
    for k in tqdm(ks, desc="cost vs k", disable=not progress, leave=False):
        args = (problem.inner_for(k), problem.outer, problem.theta0, problem.alpha, k)
        for name, fn in methods.items():
            if fn is mg.g_maml_hessian and hessian_max_k is not None and k > hessian_max_k:
                continue
            cost = measure(lambda: fn(*args), repeats=repeats)
            rows.append({"method": name, "k": k, "seconds": cost.seconds, "peak_mib": cost.peak_mib,
                         "largest_tensor": cost.largest_tensor})
    return rows
