"""Judge of notebook 06 (Problem 1: the MAML meta-gradient), checked outside the student's process.

The public probes use the public tests' inputs (what ``grader.check`` showed the student); the
hidden ones draw their problems (seeds, sizes, step sizes, numbers of steps, points) when grading
starts. Expected values come from `metalib.maml_gradient` in the grader's process; in the sandbox
those reference functions raise "not available while grading".
"""
from __future__ import annotations

import random

from ..judge import Judge, Probe, compare

HEAD = "import torch\nfrom metalib import problem1 as p1\ntorch.set_default_dtype(torch.float64)\n"


def _mlp(rng: random.Random, alpha: float | None = None) -> str:
    hidden = (rng.randint(3, 8), rng.randint(3, 8))
    alpha = round(rng.uniform(0.02, 0.12), 4) if alpha is None else alpha
    return f"p1.regression_problem(seed={rng.randrange(10**6)}, hidden={hidden}, alpha={alpha})"


def _quadratic(rng: random.Random) -> str:
    return f"p1.quadratic_problem(n={rng.randint(5, 10)}, seed={rng.randrange(10**6)}, alpha={round(rng.uniform(0.1, 0.45), 4)})"


def _jacobian(problem: str, alpha: str, perturb: int | None = None) -> str:
    theta = "prob.theta0"
    if perturb is not None:
        theta = f"prob.theta0 + 0.1 * torch.randn(prob.theta0.shape, generator=torch.Generator().manual_seed({perturb}))"
    return HEAD + f"prob = {problem}\ntheta = {theta}\nresult = inner_step_jacobian(prob.inner, theta, {alpha})\n"


def _g(fn: str, problem: str, ks) -> str:
    return HEAD + (f"prob = {problem}\n"
                   f"result = [{fn}(prob.inner, prob.outer, prob.theta0, prob.alpha, k) for k in {tuple(ks)}]\n")


def _hvp(problem: str, v_seed: int) -> str:
    return HEAD + (f"prob = {problem}\n"
                   f"v = torch.randn(prob.theta0.shape, generator=torch.Generator().manual_seed({v_seed}))\n"
                   "result = hessian_vector_product(prob.inner, prob.theta0, v)\n")


MEMORY = HEAD + """from metalib.profiling import MemoryTracker
prob = p1.regression_problem(seed=2, hidden=(40, 40))
with MemoryTracker() as tracker:
    g = g_maml_hvp(prob.inner, prob.outer, prob.theta0, prob.alpha, 2)
result = {"g": g, "largest": int(tracker.largest)}
"""


def _no_hessian(got, expected) -> None:
    """The student's call created no tensor near n*n elements (measured in the sandbox), and is right."""
    n = expected["g"].numel()
    if not isinstance(got, dict) or type(got.get("largest")) is not int:
        raise AssertionError("the memory measurement did not come back")
    if got["largest"] >= n * n // 10:
        raise AssertionError(f"an operation created a tensor of {got['largest']:,} elements, about the n*n = "
                             f"{n * n:,} of a Hessian: use Hessian-vector products only")
    compare(got.get("g"), expected["g"], name="g_maml_hvp on the n=1761 MLP")


def _two_step(seed: int, n: int, alpha: str) -> str:
    """g_MAML for k = 2 from two different symmetric Hessians (they do not commute) and a gradient;
    ``alpha`` a number or ``"rates"`` (Meta-SGD: one positive rate per parameter)."""
    return HEAD + (f"g = torch.Generator().manual_seed({seed})\n"
                   f"B0, B1 = torch.randn({n}, {n}, generator=g), torch.randn({n}, {n}, generator=g)\n"
                   f"H0, H1, g1 = B0 + B0.T, B1 + B1.T, torch.randn({n}, generator=g)\n"
                   f"rates = 0.05 + 0.3 * torch.rand({n}, generator=g)\n"
                   f"result = two_step_meta_gradient(H0, H1, g1, {alpha})\n")


TWO_STEP_PUBLIC = HEAD + ("A = torch.tensor([[2.0, 1.0], [1.0, 3.0]])\n"
                          "result = two_step_meta_gradient(A, A, torch.tensor([1.0, -1.0]), 0.1)\n")


def _n_squared(got, expected) -> None:
    """The public check: a number of GiB that is n * n float32 entries for a whole number n > 50,000."""
    import math

    if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got) or got <= 0:
        raise AssertionError(f"return a positive number of GiB, got {got!r}")
    n = math.sqrt(got * 2 ** 30 / 4)
    if n <= 50_000 or abs(n - round(n)) >= 0.01:
        raise AssertionError(f"{got} GiB is not n * n * 4 bytes for a whole number n of parameters above 50,000 "
                             "(one 3x3 convolution from 64 to 64 channels has 36,864)")


def _hessian_gib(got, expected) -> None:
    import math

    if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got):
        raise AssertionError(f"return a finite number of GiB, got {got!r}")
    if abs(got - 2 * expected) < 0.3:
        raise AssertionError("that is float64 (8 bytes per entry); the question asks for float32")
    if abs(got - expected * 2 ** 30 / 1e9) < 0.1:
        raise AssertionError("that is in GB (10**9 bytes); 1 GiB is 2**30 bytes")
    if abs(got - expected) >= 0.3:
        raise AssertionError(f"{got:.3g} GiB is not it: count every parameter (conv weights and biases, BatchNorm "
                             "scale and shift, the head), square the count, 4 bytes per entry")


def _relative_errors(pairs: list[tuple[list[float], list[float]]]) -> str:
    return HEAD + f"result = [relative_error(torch.tensor(a), torch.tensor(b)) for a, b in {pairs!r}]\n"


def make_probes(rng: random.Random) -> list[Probe]:
    def vec(n):
        return [round(rng.gauss(0, 1), 6) for _ in range(n)]

    p1q = "p1.quadratic_problem(n=4, seed=0)"
    mlp0 = "p1.regression_problem(seed=0)"
    probes = [
        # q1: the Jacobian of one inner step, I - alpha * Hessian
        Probe("q1", "jacobian_quadratic", False, _jacobian(p1q, "0.3")),
        Probe("q1", "jacobian_mlp", False, _jacobian(mlp0, "0.05")),
        Probe("q1", "jacobian_other_mlp_point_alpha", True,
              _jacobian(_mlp(rng), str(round(rng.uniform(0.2, 0.9), 4)), perturb=rng.randrange(10**6))),
        Probe("q1", "jacobian_other_quadratic", True, _jacobian(_quadratic(rng), str(round(rng.uniform(0.05, 0.5), 4)))),
        # q1b: two steps, by hand (scalar step size and Meta-SGD's per-parameter rates)
        Probe("q1b", "two_step_quadratic_scalar", False, TWO_STEP_PUBLIC, atol=1e-12, rtol=1e-10),
        Probe("q1b", "two_step_other_hessians", True, _two_step(rng.randrange(10**6), rng.randint(4, 8),
                                                                 str(round(rng.uniform(0.05, 0.3), 4))), atol=1e-10),
        Probe("q1b", "two_step_meta_sgd_rates", True, _two_step(rng.randrange(10**6), rng.randint(4, 8), "rates"),
              atol=1e-10),
        # q2b: the memory of a Conv-4 Hessian
        Probe("q2b", "conv4_hessian_gib_is_n_squared_floats", False, "result = conv4_hessian_gib()\n", check=_n_squared),
        Probe("q2b", "conv4_hessian_gib", True, "result = conv4_hessian_gib()\n", check=_hessian_gib),  # no inputs to draw
        # q2: the explicit product of Jacobians
        Probe("q2", "explicit_quadratic_k1_k2", False, _g("g_maml_explicit", "p1.quadratic_problem(n=5, seed=0)", (1, 2))),
        Probe("q2", "explicit_mlp_k3", False, _g("g_maml_explicit", mlp0, (3,))),
        Probe("q2", "explicit_other_mlp", True, _g("g_maml_explicit", _mlp(rng), (0, rng.randint(4, 6)))),
        Probe("q2", "explicit_other_quadratic", True, _g("g_maml_explicit", _quadratic(rng), (rng.randint(3, 5),))),
        # q3: Hessian-vector products, never forming a Hessian
        Probe("q3", "hvp_mlp", False, _hvp("p1.regression_problem(seed=1)", 0)),
        Probe("q3", "hvp_mlp_k1_k3", False, _g("g_maml_hvp", mlp0, (1, 3))),
        Probe("q3", "hvp_never_forms_a_hessian", False, MEMORY, check=_no_hessian),
        Probe("q3", "hvp_other_vector", True, _hvp(_mlp(rng), rng.randrange(10**6))),
        Probe("q3", "g_maml_hvp_other_quadratic", True, _g("g_maml_hvp", _quadratic(rng), (0, 1, rng.randint(4, 7)))),
        Probe("q3", "g_maml_hvp_other_mlp", True, _g("g_maml_hvp", _mlp(rng), (rng.randint(2, 4),))),
        # q4: first order and the relative error
        Probe("q4", "first_order_k2", False, _g("g_first_order", mlp0, (2,)), atol=1e-12, rtol=1e-10),
        Probe("q4", "relative_error_orthogonal", False, _relative_errors([([3.0, 0.0], [0.0, 4.0])]),
              atol=0, rtol=1e-12),
        Probe("q4", "first_order_other_mlp", True, _g("g_first_order", _mlp(rng, alpha=round(rng.uniform(0.05, 0.2), 4)),
                                                      (rng.randint(1, 5),)), atol=1e-12, rtol=1e-10),
        Probe("q4", "relative_error_other_vectors", True,
              _relative_errors([(vec(n), vec(n)) for n in (rng.randint(2, 9), rng.randint(10, 40))]), atol=0, rtol=1e-10),
    ]
    return probes


def references() -> dict:
    import torch

    from ... import maml_gradient as mg

    def inner_step_jacobian(inner_loss, theta, alpha):
        return torch.eye(theta.numel(), dtype=theta.dtype) - alpha * mg._hessian(inner_loss, theta)

    def two_step_meta_gradient(H0, H1, grad1, alpha):  # J_0^T J_1^T grad1, J_i = I - diag(alpha) H_i, as matrices
        n = grad1.numel()
        D = torch.diag(alpha if isinstance(alpha, torch.Tensor) else torch.full((n,), float(alpha), dtype=grad1.dtype))
        eye = torch.eye(n, dtype=grad1.dtype)
        return (eye - D @ H0).T @ (eye - D @ H1).T @ grad1

    def conv4_hessian_gib():  # count the parameters of the course's Conv-4 itself
        from ...nets import Conv4

        n = sum(p.numel() for p in Conv4(n_classes=5).parameters())
        return n * n * 4 / 2 ** 30

    return {"inner_step_jacobian": inner_step_jacobian, "two_step_meta_gradient": two_step_meta_gradient,
            "conv4_hessian_gib": conv4_hessian_gib, "g_maml_explicit": mg.g_maml_autograd,
            "hessian_vector_product": mg.hvp, "g_maml_hvp": mg.g_maml_autograd,
            "g_first_order": mg.g_first_order, "relative_error": mg.relative_error}


JUDGE = Judge("06_maml_gradient", make_probes, references,
              unavailable={"metalib.maml_gradient": ("_hessian", "hvp", "g_maml_hessian", "g_maml_hvp", "g_maml_autograd",
                                                     "g_maml_finite_differences", "g_maml_quadratic", "g_first_order",
                                                     "relative_error")})
