"""Unit tests for `metalib.grading.judges.maml` (notebook 05's judge).

`make mutants` (tools/mutants.py grading/ --only 'metalib.grading.judges.maml.*') showed the judge's
probe snippets (`_quadratic`, `_mlp`, `_conv4`, `_untouched`), the messages and tolerances of its
checks (`_untouched_check`, `_alpha_scaling`, `_two_over_lambda`), the ranges `make_probes` draws
from and each probe's tolerances, and the references, untested outside full notebook runs.
Each test checks against an exact expected string or message, or a value computed by hand.
"""
from __future__ import annotations

import random

import pytest
import torch

from metalib.grading.judges import common
from metalib.grading.judges import maml as mj
from judge_fakes import RecordingRng as _Recording, fails as _fails  # noqa: E402


# ---------------------------------------------------------------------------------------------- probe code


def test_quadratic_code():
    assert mj._quadratic([[1.0]], [[2.0]], [[0.5]], 0.25, 3, "fn") == mj.HEAD + (
        "X = torch.tensor([[1.0]], dtype=torch.float64)\n"
        "y = torch.tensor([[2.0]], dtype=torch.float64)\n"
        "Xq, yq = X.flip(0) * 0.5, y + 1\n"
        "w = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)\n"
        'phi = fn(fmodel_lin, {"w": w}, X, y, 0.25, 3, F.mse_loss)\n'
        "(meta,) = torch.autograd.grad(F.mse_loss(fmodel_lin(phi, Xq), yq), [w])\n"
        'result = {"adapted w": plain(phi["w"]), "meta-gradient": plain(meta)}\n')


def test_mlp_code():
    assert mj._mlp(10, (4, 5), 6, 7, 0.5, 2) == mj.HEAD + (
        "from metalib import maml\n"
        "from metalib.nets import MLP\n"
        "torch.manual_seed(10)\n"
        "net = MLP(1, [4, 5], 1, activation=torch.nn.Tanh).double()\n"
        "fmodel, params = maml.functional(net)\n"
        "g = torch.Generator().manual_seed(11)\n"
        "x, xq = torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(7, 1, generator=g, dtype=torch.float64)\n"
        "y, yq = torch.sin(x), torch.sin(xq)\n"
        "phi = adapt(fmodel, params, x, y, 0.5, 2, F.mse_loss)\n"
        "meta = torch.autograd.grad(F.mse_loss(fmodel(phi, xq), yq), list(params.values()))\n"
        'result = {"adapted": plain({n: phi[n] for n in params}), "meta-gradient (2 steps, second order)": plain(meta)}\n')


def test_conv4_code():
    assert mj._conv4(10, 3, 2, 0.5, 4) == mj.HEAD + (
        "from metalib import maml\n"
        "from metalib.nets import Conv4\n"
        "torch.manual_seed(10)\n"
        "net = Conv4(hidden=8, n_classes=3, running_stats=False).double()\n"
        "fmodel, params = maml.functional(net)\n"
        "g = torch.Generator().manual_seed(11)\n"
        "x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64)\n"
        "xq = torch.rand(9, 1, 28, 28, generator=g, dtype=torch.float64)\n"
        "y, yq = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat(3)\n"
        "phi = adapt_first_order(fmodel, params, x, y, 0.5, 4, F.cross_entropy)\n"
        "meta = torch.autograd.grad(F.cross_entropy(fmodel(phi, xq), yq), list(params.values()))\n"
        'result = {"first-order meta-gradient": plain(meta)}\n')


def test_untouched_code():
    assert mj._untouched([1.5, -2.0, 3.0], 2) == mj.HEAD + (
        "w = torch.tensor([[1.5], [-2.0], [3.0]], requires_grad=True)\n"
        "before = w.detach().clone()\n"
        'params = {"w": w}\n'
        "phi = adapt(fmodel_lin, params, torch.eye(3), torch.zeros(3, 1), 0.5, 2, F.mse_loss)\n"
        'result = {"adapted": plain(phi) if isinstance(phi, dict) else None,\n'
        '          "params unchanged": bool(torch.equal(w.detach(), before) and params["w"] is w and set(params) == {"w"}),\n'
        '          "a new dict": phi is not params}\n')


def test_untouched_probe_runs_with_the_reference_adapt():
    refs = mj.references()
    ns = {"torch": torch, **refs}
    exec(mj._untouched([2.0, -4.0], 2), ns)
    assert ns["result"]["params unchanged"] is True and ns["result"]["a new dict"] is True
    assert torch.equal(ns["result"]["adapted"]["w"], torch.tensor([[0.5], [-1.0]]))   # halved twice


# ---------------------------------------------------------------------------------------------- checks


def test_untouched_check():
    w = torch.tensor([[0.5], [-1.0]])
    e = {"adapted": {"w": w}, "params unchanged": True, "a new dict": True}
    z = {"adapted": {"w": torch.zeros(2, 1)}, "params unchanged": True, "a new dict": True}
    mj._untouched_check({**z, "adapted": {"w": torch.full((2, 1), 0.9e-6)}}, z)         # atol 1e-6
    with pytest.raises(AssertionError, match=r"^w after steps of alpha = 0.5 \(each step halves it\)\['w'\] differs"):
        mj._untouched_check({**z, "adapted": {"w": torch.full((2, 1), 1.1e-6)}}, z)
    big = {"adapted": {"w": w * 1e3}, "params unchanged": True, "a new dict": True}
    mj._untouched_check({**big, "adapted": {"w": w * 1e3 * (1 + 0.9e-5)}}, big)      # rtol 1e-5
    with pytest.raises(AssertionError):
        mj._untouched_check({**big, "adapted": {"w": w * 1e3 * (1 + 1.2e-5)}}, big)
    gone = "the measurement did not come back"
    for got in (None, [w], {"adapted": {"w": w}, "params unchanged": True},
                {**e, "extra": 1}):
        _fails(mj._untouched_check, got, e, gone)
    names = "adapt should return a dict with the same names as params"
    for adapted in (None, w, {"w": w, "b": w}, {"v": w}, {}):
        _fails(mj._untouched_check, {**e, "adapted": adapted}, e, names)
    for bad in (False, 1, None):
        _fails(mj._untouched_check, {**e, "params unchanged": bad}, e, "adapt must not change params (build a new dict)")
        _fails(mj._untouched_check, {**e, "a new dict": bad}, e, "adapt should return a new dict")


def test_alpha_scaling():
    mj._alpha_scaling([0.8, 0.4], None)
    mj._alpha_scaling([0.8, 0.4 * (1 + 0.9e-6)], None)
    mj._alpha_scaling([1, 0.5], None)
    _fails(mj._alpha_scaling, [0.8, 0.4 * (1 + 1.1e-6)], None,
           "twice the curvature should halve the largest stable step (only alpha * lambda matters), got 0.8 and "
           f"{0.4 * (1 + 1.1e-6)}")
    _fails(mj._alpha_scaling, [0.8, 0.8], None,
           "twice the curvature should halve the largest stable step (only alpha * lambda matters), got 0.8 and 0.8")
    _fails(mj._alpha_scaling, [0.0, 0.0], None, "a step size is positive, got 0.0")
    _fails(mj._alpha_scaling, [-0.8, -0.4], None, "a step size is positive, got -0.8")
    for got in (None, [0.8], [0.8, 0.4, 0.2], (0.8, 0.4)):
        _fails(mj._alpha_scaling, got, None, "the answers did not come back")
    _fails(mj._alpha_scaling, ["0.8", 0.4], None, "largest_stable_alpha(2.5): return a Python number, got str")
    _fails(mj._alpha_scaling, [0.8, None], None, "largest_stable_alpha(5.0): return a Python number, got NoneType")


def test_two_over_lambda():
    e = [0.5, 0.02]                                   # lambda = 4 and 100
    mj._two_over_lambda([0.5 * (1 + 0.9e-6), 0.02], e)
    _fails(mj._two_over_lambda, [0.5 * (1 + 1.1e-6), 0.02], e,
           f"lambda = 4: {0.5 * (1 + 1.1e-6)} is not it; when is |1 - alpha * lambda| > 1?")
    _fails(mj._two_over_lambda, [0.5, 0.03], e, "lambda = 100: 0.03 is not it; when is |1 - alpha * lambda| > 1?")
    one = ("alpha = 1/lambda lands on the minimum in one step; larger steps still converge "
           "(they oscillate)")
    _fails(mj._two_over_lambda, [0.5, 0.01], e, one)
    _fails(mj._two_over_lambda, [0.25 * (1 + 0.9e-3), 0.02], e, one)
    _fails(mj._two_over_lambda, [0.25 * (1 + 1.1e-3), 0.02], e,
           f"lambda = 4: {0.25 * (1 + 1.1e-3)} is not it; when is |1 - alpha * lambda| > 1?")
    _fails(mj._two_over_lambda, [0.5, "x"], e, "largest_stable_alpha(100): return a Python number, got str")
    _fails(mj._two_over_lambda, [0.5, 0.02], [0.5, 2 / 3.14159],
           "lambda = 3.142: 0.02 is not it; when is |1 - alpha * lambda| > 1?")
    for got in (None, [0.5], [0.5, 0.02, 1.0], (0.5, 0.02)):
        _fails(mj._two_over_lambda, got, e, "the answers did not come back")


# ---------------------------------------------------------------------------------------------- probes


def test_probes_draw_their_inputs_as_documented():
    rng = _Recording(4)
    probes = mj.make_probes(rng)
    calls, v = rng.calls, [c[-1] for c in rng.calls]
    n, d = v[0], v[1]
    nmat = n * d + n + d
    want = [("randint", 4, 8), ("randint", 2, 4)] + [("uniform", -2, 2)] * nmat + [("uniform", -2, 3)] * 3 + [
        ("randrange", 10**6), ("randint", 4, 16), ("randint", 4, 16), ("randint", 5, 12), ("randint", 3, 9),
        ("uniform", 0.01, 0.1), ("randint", 2, 4), ("uniform", 0.01, 0.1), ("randint", 1, 3), ("randint", 2, 4)]
    k = v[len(want) - 1]
    want += [("uniform", 0.5, 3), ("choice", (-1, 1))] * k + [("randint", 2, 4), ("randrange", 10**6),
                                                              ("randint", 2, 4), ("randint", 1, 3),
                                                              ("uniform", 0.1, 0.5), ("randint", 1, 3),
                                                              ("uniform", 0.01, 0.1), ("randint", 2, 4)]
    assert [c[:-1] for c in calls] == want
    r4 = [round(x, 4) for x in v[2:2 + nmat]]
    X = [r4[i * d:(i + 1) * d] for i in range(n)]
    y = [[x] for x in r4[n * d:n * d + n]]
    w = [[x] for x in r4[n * d + n:]]
    i = 2 + nmat
    lams = [round(10 ** x, 4) for x in v[i:i + 3]]
    i += 3
    mlp = mj._mlp(v[i], (v[i + 1], v[i + 2]), v[i + 3], v[i + 4], round(v[i + 5], 4), v[i + 6])
    quad = mj._quadratic(X, y, w, round(v[i + 7], 4), v[i + 8], "adapt")
    i += 10
    ws = [round(v[i + 2 * j], 3) * v[i + 2 * j + 1] for j in range(k)]
    i += 2 * k
    untouched = mj._untouched(ws, v[i])
    conv = mj._conv4(v[i + 1], v[i + 2], v[i + 3], round(v[i + 4], 3), v[i + 5])
    quad_fo = mj._quadratic(X, y, w, round(v[i + 6], 4), v[i + 7], "adapt_first_order")
    X0, y0, w0 = [[1.0, 2.0], [0.0, 1.0], [3.0, 1.0]], [[1.0], [0.0], [2.0]], [[0.3], [-0.2]]
    assert [(p.question, p.name, p.hidden, p.code, p.atol, p.rtol) for p in probes] == [
        ("q1", "one_step_by_hand", False, mj.BY_HAND, 1e-6, 1e-5),
        ("q1", "meta_gradient_has_the_hessian_term", False, mj._quadratic(X0, y0, w0, 0.05, 1, "adapt"), 1e-12, 1e-10),
        ("q1", "adapt_other_mlp_float64", True, mlp, 1e-10, 1e-8),
        ("q1", "adapt_other_linear_regression", True, quad, 1e-10, 1e-8),
        ("q1", "adapt_does_not_modify_params", True, untouched, 1e-10, 1e-8),
        ("q2", "first_order_meta_gradient_is_the_query_gradient", False,
         mj._quadratic(X0, y0, w0, 0.05, 2, "adapt_first_order"), 1e-12, 1e-10),
        ("q2", "first_order_other_conv4", True, conv, 1e-10, 1e-8),
        ("q2", "first_order_other_linear_regression", True, quad_fo, 1e-10, 1e-8),
        ("q3", "joint_predictor_is_a_choice", False, common.choice_probe("joint_predictor"), 1e-10, 1e-8),
        ("q3", "joint_predictor_is_the_mean_function", True, common.choice_probe("joint_predictor"), 1e-10, 1e-8),
        ("q4", "largest_stable_alpha_scales_with_curvature", False,
         "result = [largest_stable_alpha(2.5), largest_stable_alpha(5.0)]\n", 1e-10, 1e-8),
        ("q4", "largest_stable_alpha_is_two_over_lambda", True,
         common.PLAIN + f"result = [plain(largest_stable_alpha(lam)) for lam in {lams}]\n", 1e-10, 1e-8)]
    checks = [p.check for p in probes]
    assert checks[:4] == [None] * 4 and checks[5:8] == [None] * 3
    assert checks[4] is mj._untouched_check and checks[10] is mj._alpha_scaling and checks[11] is mj._two_over_lambda


def test_choice_checks():
    probes = {p.name: p for p in mj.make_probes(random.Random(0))}
    pub, hid = probes["joint_predictor_is_a_choice"].check, probes["joint_predictor_is_the_mean_function"].check
    e = {"set": True, "items": ["b"], "repr": "{'b'}"}
    pub({"set": True, "items": ["c"], "repr": "{'c'}"}, e)
    _fails(pub, {"set": True, "items": ["b", "c"], "repr": "{'b', 'c'}"}, e,
           "return a set of one of ['a', 'b', 'c', 'd'], e.g. {'a'}, got {'b', 'c'}")
    _fails(pub, {"set": False, "items": ["b"], "repr": "['b']"}, e, "return a set of one letter, e.g. {'a'}, got ['b']")
    _fails(pub, {"set": True, "items": ["e"], "repr": "{'e'}"}, e, "['e'] are not among the options ['a', 'b', 'c', 'd']")
    hid({"set": True, "items": ["b"], "repr": ""}, e)
    for letter, hint in (("a", "averaging over phases in [0, pi] only, sin(x - phi) does not average to 0"),
                         ("c", "the mean of A sin(x - phi) over phi is not the sinusoid at the mean phase: average "
                               "the functions, not the parameters"),
                         ("d", "before any inner step there is no task information: one function for all tasks"),
                         ("e", "not quite")):
        _fails(hid, {"set": True, "items": [letter], "repr": ""}, e, hint)
    _fails(hid, {"set": True, "items": [], "repr": ""}, e, "not quite")


# ---------------------------------------------------------------------------------------------- references


def test_references_by_hand():
    refs = mj.references()
    assert set(refs) == {"adapt", "adapt_first_order", "joint_predictor", "largest_stable_alpha"}
    assert refs["joint_predictor"]() == {"b"} and refs["largest_stable_alpha"](4.0) == 0.5
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)
    f = lambda p, x: x @ p["w"]
    mse = torch.nn.functional.mse_loss
    for name in ("adapt", "adapt_first_order"):
        w = torch.tensor([[0.5], [0.5]], dtype=torch.float64, requires_grad=True)
        phi = refs[name](f, {"w": w}, X, y, 0.1, 1, mse)["w"]
        # residual Xw - y = (-0.5, 0.5, -1); gradient 2/3 X^T r = (-1, -1/3)
        torch.testing.assert_close(phi.detach(), torch.tensor([[0.6], [0.5 + 0.1 / 3]], dtype=torch.float64))
        (jac,) = torch.autograd.grad(phi.sum(), w)
        # second order: (I - 0.1 * 2/3 X^T X) 1 with X^T X = [[2, 1], [1, 2]]: each row 1 - 0.2 = 0.8
        want = torch.ones(2, 1) if name == "adapt_first_order" else torch.full((2, 1), 0.8)
        torch.testing.assert_close(jac, want.double())
        two = refs[name](f, {"w": w}, X, y, 0.1, 2, mse)["w"]
        assert not torch.allclose(two.detach(), phi.detach())         # steps reaches the reference
    assert mj.JUDGE.assignment == "05_maml" and mj.JUDGE.make_probes is mj.make_probes
    assert mj.JUDGE.references is mj.references and mj.JUDGE.guarded == {"metalib.maml": ("adapt", "sgd_step")}
