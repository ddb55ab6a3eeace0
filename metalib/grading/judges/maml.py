"""Judge of notebook 05 (MAML: the inner loop by hand), checked outside the student's process.

Public probes use the public tests' inputs; hidden ones draw their networks, data, step sizes and
numbers of steps when grading starts. Expected values come from `metalib.maml.adapt` in the grader's
process. The notebook's own experiments train with `metalib.maml`, so ``adapt`` and ``sgd_step`` are
guarded, not hidden: they raise only while the probes run (`guard`), whatever route reaches them.
"""
from __future__ import annotations

import math
import random

from ..judge import Judge, Probe, compare
from .common import PLAIN, choice_probe, is_choice, number, right_choice

HEAD = PLAIN + "import torch.nn.functional as F\nfmodel_lin = lambda p, x: x @ p['w']\n"
F32 = {"atol": 1e-6, "rtol": 1e-5}     # float32 inputs: another correct order of operations differs by ~1e-7

BY_HAND = HEAD + """X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
y = torch.tensor([[1.0], [0.0], [2.0]])
w = torch.tensor([[0.5], [0.5]], requires_grad=True)
result = {f"{k} steps": plain(adapt(fmodel_lin, {"w": w}, X, y, 0.1, k, F.mse_loss)["w"]) for k in (1, 2, 0)}
"""


def _quadratic(X, y, w, alpha, steps, fn: str) -> str:
    """One-parameter linear regression: adapted w and the meta-gradient of a query loss (float64)."""
    return HEAD + f"""X = torch.tensor({X}, dtype=torch.float64)
y = torch.tensor({y}, dtype=torch.float64)
Xq, yq = X.flip(0) * 0.5, y + 1
w = torch.tensor({w}, dtype=torch.float64, requires_grad=True)
phi = {fn}(fmodel_lin, {{"w": w}}, X, y, {alpha}, {steps}, F.mse_loss)
(meta,) = torch.autograd.grad(F.mse_loss(fmodel_lin(phi, Xq), yq), [w])
result = {{"adapted w": plain(phi["w"]), "meta-gradient": plain(meta)}}
"""


def _mlp(seed: int, hidden: tuple, n: int, nq: int, alpha: float, steps: int) -> str:
    return HEAD + f"""from metalib import maml
from metalib.nets import MLP
torch.manual_seed({seed})
net = MLP(1, {list(hidden)}, 1, activation=torch.nn.Tanh).double()
fmodel, params = maml.functional(net)
g = torch.Generator().manual_seed({seed + 1})
x, xq = torch.randn({n}, 1, generator=g, dtype=torch.float64), torch.randn({nq}, 1, generator=g, dtype=torch.float64)
y, yq = torch.sin(x), torch.sin(xq)
phi = adapt(fmodel, params, x, y, {alpha}, {steps}, F.mse_loss)
meta = torch.autograd.grad(F.mse_loss(fmodel(phi, xq), yq), list(params.values()))
result = {{"adapted": plain({{n: phi[n] for n in params}}), "meta-gradient ({steps} steps, second order)": plain(meta)}}
"""


def _conv4(seed: int, n_way: int, k: int, alpha: float, steps: int) -> str:
    return HEAD + f"""from metalib import maml
from metalib.nets import Conv4
torch.manual_seed({seed})
net = Conv4(hidden=8, n_classes={n_way}, running_stats=False).double()
fmodel, params = maml.functional(net)
g = torch.Generator().manual_seed({seed + 1})
x = torch.rand({n_way * k}, 1, 28, 28, generator=g, dtype=torch.float64)
xq = torch.rand({n_way * 3}, 1, 28, 28, generator=g, dtype=torch.float64)
y, yq = torch.arange({n_way}).repeat_interleave({k}), torch.arange({n_way}).repeat(3)
phi = adapt_first_order(fmodel, params, x, y, {alpha}, {steps}, F.cross_entropy)
meta = torch.autograd.grad(F.cross_entropy(fmodel(phi, xq), yq), list(params.values()))
result = {{"first-order meta-gradient": plain(meta)}}
"""


def _untouched(w: list[float], steps: int) -> str:
    """MSE on X = I, y = 0: the gradient 2/n X^T X w = w, so each step with alpha = 0.5 halves w."""
    return HEAD + f"""w = torch.tensor({[[v] for v in w]}, requires_grad=True)
before = w.detach().clone()
params = {{"w": w}}
phi = adapt(fmodel_lin, params, torch.eye({len(w)}), torch.zeros({len(w)}, 1), 0.5, {steps}, F.mse_loss)
result = {{"adapted": plain(phi) if isinstance(phi, dict) else None,
          "params unchanged": bool(torch.equal(w.detach(), before) and params["w"] is w and set(params) == {{"w"}}),
          "a new dict": phi is not params}}
"""


def _untouched_check(got, expected) -> None:
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError("the measurement did not come back")
    if not isinstance(got["adapted"], dict) or set(got["adapted"]) != {"w"}:
        raise AssertionError("adapt should return a dict with the same names as params")
    if got["params unchanged"] is not True:
        raise AssertionError("adapt must not change params (build a new dict)")
    if got["a new dict"] is not True:
        raise AssertionError("adapt should return a new dict")
    compare(got["adapted"], expected["adapted"], name="w after steps of alpha = 0.5 (each step halves it)", **F32)


def _alpha_scaling(got, expected) -> None:
    """Public check: positive numbers, and twice the curvature halves the step (alpha * lambda matters)."""
    if not isinstance(got, list) or len(got) != 2:
        raise AssertionError("the answers did not come back")
    a, b = number(got[0], "largest_stable_alpha(2.5)"), number(got[1], "largest_stable_alpha(5.0)")
    if a <= 0:
        raise AssertionError(f"a step size is positive, got {a}")
    if not math.isclose(b, a / 2, rel_tol=1e-6):
        raise AssertionError(f"twice the curvature should halve the largest stable step (only alpha * lambda matters), "
                             f"got {a} and {b}")


def _two_over_lambda(got, expected) -> None:
    if not isinstance(got, list) or len(got) != len(expected):
        raise AssertionError("the answers did not come back")
    for a, want in zip(got, expected):
        lam = 2 / want
        a = number(a, f"largest_stable_alpha({lam:.4g})")
        if math.isclose(a, 1 / lam, rel_tol=1e-3):
            raise AssertionError("alpha = 1/lambda lands on the minimum in one step; larger steps still converge "
                                 "(they oscillate)")
        if not math.isclose(a, want, rel_tol=1e-6):
            raise AssertionError(f"lambda = {lam:.4g}: {a} is not it; when is |1 - alpha * lambda| > 1?")


JOINT_HINTS = {"a": "averaging over phases in [0, pi] only, sin(x - phi) does not average to 0",
               "c": "the mean of A sin(x - phi) over phi is not the sinusoid at the mean phase: average the functions, "
                    "not the parameters",
               "d": "before any inner step there is no task information: one function for all tasks"}


def make_probes(rng: random.Random) -> list[Probe]:
    def seed():
        return rng.randrange(10**6)

    def mat(rows, cols):
        return [[round(rng.uniform(-2, 2), 4) for _ in range(cols)] for _ in range(rows)]

    X0, y0, w0 = [[1.0, 2.0], [0.0, 1.0], [3.0, 1.0]], [[1.0], [0.0], [2.0]], [[0.3], [-0.2]]
    n, d = rng.randint(4, 8), rng.randint(2, 4)
    hidden_quadratic = (mat(n, d), mat(n, 1), mat(d, 1))
    lams = [round(10 ** rng.uniform(-2, 3), 4) for _ in range(3)]
    return [
        # q1: adapt, second order
        Probe("q1", "one_step_by_hand", False, BY_HAND, **F32),
        Probe("q1", "meta_gradient_has_the_hessian_term", False, _quadratic(X0, y0, w0, 0.05, 1, "adapt"),
              atol=1e-12, rtol=1e-10),
        Probe("q1", "adapt_other_mlp_float64", True,
              _mlp(seed(), (rng.randint(4, 16), rng.randint(4, 16)), rng.randint(5, 12), rng.randint(3, 9),
                   round(rng.uniform(0.01, 0.1), 4), rng.randint(2, 4)), atol=1e-10, rtol=1e-8),
        Probe("q1", "adapt_other_linear_regression", True,
              _quadratic(*hidden_quadratic, round(rng.uniform(0.01, 0.1), 4), rng.randint(1, 3), "adapt"),
              atol=1e-10, rtol=1e-8),
        Probe("q1", "adapt_does_not_modify_params", True,
              _untouched([round(rng.uniform(0.5, 3), 3) * rng.choice((-1, 1)) for _ in range(rng.randint(2, 4))],
                         rng.randint(2, 4)), check=_untouched_check),
        # q2: first order
        Probe("q2", "first_order_meta_gradient_is_the_query_gradient", False,
              _quadratic(X0, y0, w0, 0.05, 2, "adapt_first_order"), atol=1e-12, rtol=1e-10),
        Probe("q2", "first_order_other_conv4", True,
              _conv4(seed(), rng.randint(2, 4), rng.randint(1, 3), round(rng.uniform(0.1, 0.5), 3), rng.randint(1, 3)),
              atol=1e-10, rtol=1e-8),
        Probe("q2", "first_order_other_linear_regression", True,
              _quadratic(*hidden_quadratic, round(rng.uniform(0.01, 0.1), 4), rng.randint(2, 4), "adapt_first_order"),
              atol=1e-10, rtol=1e-8),
        # q3: the joint predictor (a prediction)
        Probe("q3", "joint_predictor_is_a_choice", False, choice_probe("joint_predictor"),
              check=is_choice({"a", "b", "c", "d"}, "one letter", one=True)),
        Probe("q3", "joint_predictor_is_the_mean_function", True, choice_probe("joint_predictor"),
              check=right_choice(lambda answer, right: JOINT_HINTS.get(next(iter(answer), ""), "not quite"))),
        # q4: the largest stable step size
        Probe("q4", "largest_stable_alpha_scales_with_curvature", False,
              "result = [largest_stable_alpha(2.5), largest_stable_alpha(5.0)]\n", check=_alpha_scaling),
        Probe("q4", "largest_stable_alpha_is_two_over_lambda", True,
              PLAIN + f"result = [plain(largest_stable_alpha(lam)) for lam in {lams}]\n", check=_two_over_lambda),
    ]


def references() -> dict:
    from ... import maml

    def adapt(fmodel, params, x, y, alpha, steps, loss_fn):
        return maml.adapt(fmodel, params, x, y, inner_lr=alpha, steps=steps, loss_fn=loss_fn)

    def adapt_first_order(fmodel, params, x, y, alpha, steps, loss_fn):
        return maml.adapt(fmodel, params, x, y, inner_lr=alpha, steps=steps, loss_fn=loss_fn, first_order=True)

    def largest_stable_alpha(lam):
        return 2 / lam

    return {"adapt": adapt, "adapt_first_order": adapt_first_order,
            "joint_predictor": lambda: {"b"}, "largest_stable_alpha": largest_stable_alpha}


JUDGE = Judge("05_maml", make_probes, references, guarded={"metalib.maml": ("adapt", "sgd_step")})
