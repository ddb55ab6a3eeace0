"""metalib.grading.judges.maml_rl (notebook 08's judge): what `make mutants MODULES=grading/ --only
'metalib.grading.judges.maml_rl.*'` showed untested by the fast grading tests (tests/test_judges.py grades
whole notebooks in sandboxed kernels, far too slow to run per mutant): the hidden draws of `make_probes`
(which generator calls, in which order, rounded to how many digits), each probe's question, visibility,
check and tolerances, the checks' boundaries and exact messages (`_in_range`, `_origin_value`, `_flows`,
the prediction hints), and the references (the return of staying at the origin, the inner step's
discount and baseline, the predicted letters).

Every expected value is written out by hand or computed by a plain loop (the origin's return by a
midpoint sum over the square); nothing starts a kernel or a sandbox.
"""
from __future__ import annotations

import inspect
import math
import random
import re

import pytest
import torch

from metalib.grading.judges import common
from metalib.grading.judges import maml_rl as j
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails  # noqa: E402


# ---------------------------------------------------------------------------- probe code

def test_probe_code_is_the_head_then_the_measurement():
    cfg = [(1, (4,), 0.5, 2, 3, 10, 0.1, 0.9)]
    assert j._adapted(cfg) == j.HEAD + (
        "result = []\n"
        "for seed, hidden, init_std, B, K, horizon, lr, gamma in [(1, (4,), 0.5, 2, 3, 10, 0.1, 0.9)]:\n"
        "    env, pol, theta, goals, g = setup(seed, hidden, init_std, B, K, horizon)\n"
        "    traj = sample_trajectories(pol, theta, env, goals, K, generator=g)\n"
        "    result.append(plain(inner_step(pol, theta, traj, lr, gamma)))\n")
    d = j._derivative(2, (8, 8), 0.3, 2, 3, 0.1, 0.9)
    assert d.startswith(j.HEAD + "env, pol, theta, goals, g = setup(2, (8, 8), 0.3, 2, 3)\n"
                        "traj = sample_trajectories(pol, theta, env, goals, 3, generator=g)\n"
                        "new = inner_step(pol, theta, traj, 0.1, 0.9)\n")
    assert d.endswith('result = {"flows": flows, "d(adapted)/d(params)": plain(d)}\n')
    m = j._meta_gradient(5, (6,), 0.7, 3, 4, 0.05, 0.95)
    assert m == j.HEAD + (
        "env, pol, theta, goals, g = setup(5, (6,), 0.7, 3, 4)\n"
        "traj = sample_trajectories(pol, theta, env, goals, 4, generator=g)\n"
        "post = sample_trajectories(pol, theta, env, goals, 4, generator=g)\n"
        'loss = outer_loss(pol, inner_step(pol, theta, traj, 0.05, 0.95), post, _advantages(post, 0.95, "linear", '
        "normalize=False))\n"
        "result = plain(torch.autograd.grad(loss, list(theta.values())))\n")


# ---------------------------------------------------------------------------- make_probes

def test_probes_draw_their_inputs_as_documented():
    rng = _ScriptedRng(
        # other[0]: seed, hidden (2 layers), init_std, B, K, horizon, lr, gamma
        11, 2, 5, 6, 0.123456, 3, 4, 20, 0.0123456, 0.876543,
        # other[1]: one layer
        22, 1, 7, 0.654321, 5, 6, 40, 0.2999999, 0.9999,
        # meta-gradient: seed, hidden, init_std, B, K, lr, gamma
        33, 1, 9, 0.55555, 4, 3, 0.0987654, 0.912345,
        # derivative: seed, hidden, init_std, B, K, lr, gamma
        44, 2, 10, 12, 0.777777, 2, 5, 0.1234567, 0.8888888)
    probes = j.make_probes(rng)
    assert rng.values == []
    assert rng.calls == [
        ("randrange", 10**6), ("randint", 1, 2), ("randint", 4, 16), ("randint", 4, 16), ("uniform", 0.3, 1.0),
        ("randint", 2, 5), ("randint", 2, 6), ("randint", 10, 40), ("uniform", 0.01, 0.3), ("uniform", 0.8, 1.0),
        ("randrange", 10**6), ("randint", 1, 2), ("randint", 4, 16), ("uniform", 0.3, 1.0),
        ("randint", 2, 5), ("randint", 2, 6), ("randint", 10, 40), ("uniform", 0.01, 0.3), ("uniform", 0.8, 1.0),
        ("randrange", 10**6), ("randint", 1, 2), ("randint", 4, 16), ("uniform", 0.5, 1.0),
        ("randint", 2, 4), ("randint", 3, 6), ("uniform", 0.01, 0.1), ("uniform", 0.9, 1.0),
        ("randrange", 10**6), ("randint", 1, 2), ("randint", 4, 16), ("randint", 4, 16), ("uniform", 0.2, 0.8),
        ("randint", 2, 4), ("randint", 2, 5), ("uniform", 0.02, 0.3), ("uniform", 0.85, 1.0)]
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q2", "stay_at_origin_is_in_the_right_range", False), ("q2", "stay_at_origin_value", True),
        ("q1", "inner_step_matches_library", False), ("q1", "inner_step_is_differentiable", False),
        ("q1", "inner_step_other_seeds_and_sizes", True), ("q1", "inner_step_second_order_other_seed", True),
        ("q1", "inner_step_is_differentiable_other_seed", True),
        ("q3", "predictions_are_a_set_of_letters", False), ("q3", "predictions_right", True)]
    origin = common.PLAIN + "result = plain(stay_at_origin_return())\n"
    assert [p.code for p in probes] == [
        origin, origin,
        j._adapted([(0, (16, 16), 0.5, 3, 4, None, 0.05, 0.99)]),
        j._derivative(2, (8, 8), 0.3, 2, 3, 0.1, 0.9),
        j._adapted([(11, (5, 6), 0.123, 3, 4, 20, 0.0123, 0.877), (22, (7,), 0.654, 5, 6, 40, 0.3, 1.0)]),
        j._meta_gradient(33, (9,), 0.556, 4, 3, 0.0988, 0.912),
        j._derivative(44, (10, 12), 0.778, 2, 5, 0.1235, 0.889),
        common.choice_probe("adaptation_predictions"), common.choice_probe("adaptation_predictions")]
    assert probes[0].check is j._in_range and probes[1].check is j._origin_value
    assert probes[3].check is j._flows and probes[6].check is j._flows
    for p in (probes[2], probes[4], probes[5]):
        assert p.check is None and (p.atol, p.rtol) == (1e-8, 1e-6), p.name
    assert all((p.atol, p.rtol) == (1e-10, 1e-8) for p in probes if p.check is not None)


def test_probe_names_are_unique_under_a_real_generator():
    probes = j.JUDGE.probes(random.Random(3))
    assert len(probes) == 9 and j.JUDGE.assignment == "08_maml_rl"
    assert j.JUDGE.guarded == {"metalib.rl.maml_rl": ("adapt",)} and j.JUDGE.make_probes is j.make_probes
    assert j.JUDGE.references is j.references


def test_the_prediction_probes_checks():
    probes = {p.name: p for p in j.make_probes(random.Random(0))}
    public, hidden = probes["predictions_are_a_set_of_letters"].check, probes["predictions_right"].check
    right = {"set": True, "items": ["b", "d"], "repr": "{'b', 'd'}"}
    public(right, right)
    public({"set": True, "items": ["a", "c"], "repr": ""}, right)    # any letters (more than one) pass the public check
    _fails(public, {"set": False, "items": ["b"], "repr": "['b']"}, right,
           "return a set of letters, e.g. {'a'}, got ['b']")
    _fails(public, {"set": True, "items": ["b", "e"], "repr": ""}, right,
           "['e'] are not among the options ['a', 'b', 'c', 'd']")
    _fails(public, {"set": True, "items": [], "repr": "set()"}, right,
           "the empty set: at least one of ['a', 'b', 'c', 'd'] is right")
    hidden(right, right)
    _fails(hidden, {"set": True, "items": ["b"], "repr": ""}, right,
           "MAML's initialisation is trained for the return after the inner step, at this alpha")
    _fails(hidden, {"set": True, "items": ["a", "d"], "repr": ""}, right, _BEFORE)


# ---------------------------------------------------------------------------- checks

_BEFORE = ("before any step no policy knows the goal; the pre-trained policy is the one trained for exactly that "
           "return (MAML's initialisation is trained for the return after the step)")
_AFTER = "MAML's initialisation is trained for the return after the inner step, at this alpha"


@pytest.mark.parametrize("answer, hint", [
    ({"a", "b"}, _BEFORE), ({"a"}, _BEFORE), ({"c"}, _BEFORE), ({"c", "d"}, _BEFORE), (set(), _BEFORE),
    ({"b"}, _AFTER), ({"b", "c"}, _AFTER), ({"b", "d"}, _AFTER)])
def test_prediction_hints(answer, hint):
    assert j._predictions_hint(answer, {"b", "d"}) == hint


def test_in_range_bounds_and_messages():
    low = -100 * math.sqrt(1 / 6)        # -40.82...
    for v in (low, -25.0, -30, -40, -25.000001):
        j._in_range(v, None)
    for v in (-24.99999, -25 + 1e-12, low - 1e-9, -41, 0.0, -100 / 6):
        _fails(j._in_range, v, None, "E|g| lies between E|g_x| = 0.25 and sqrt(E|g|^2) = sqrt(1/6), so the return lies "
                                     f"in [-40.8, -25]; got {v}")
    _fails(j._in_range, "x", None, "stay_at_origin_return(): return a Python number, got str")
    _fails(j._in_range, float("nan"), None, "stay_at_origin_return(): got nan, not a finite number")


_SQUARED = "that is -100 E|g|^2: the reward is minus the distance, not its square"


def test_origin_value_bounds_and_messages():
    j._origin_value(-38.26, -38.2598)
    j._origin_value(0.49, 0.0)
    j._origin_value(-0.49, 0.0)
    _fails(j._origin_value, 0.5, 0.0, "0.50 is not it: average -100 |g| over the square [-0.5, 0.5]^2")   # at 0.5 it fails
    _fails(j._origin_value, -0.5, 0.0, "-0.50 is not it: average -100 |g| over the square [-0.5, 0.5]^2")
    _fails(j._origin_value, -30.123, -38.0, "-30.12 is not it: average -100 |g| over the square [-0.5, 0.5]^2")
    for v in (-100 / 6, 0.5 - 100 / 6, -0.5 - 100 / 6, -16.2, -17.1):   # within 0.5 of -100/6, the edges included
        _fails(j._origin_value, v, v, _SQUARED)
    j._origin_value(0.5001 - 100 / 6, 0.5001 - 100 / 6)        # just outside: judged on its own
    j._origin_value(-0.5001 - 100 / 6, -0.5001 - 100 / 6)
    _fails(j._origin_value, None, 0.0, "stay_at_origin_return(): return a Python number, got NoneType")


def test_flows_messages_and_tolerances():
    e = {"flows": True, "d(adapted)/d(params)": [torch.tensor([0.0, 1.0, 100.0], dtype=torch.float64)]}
    name = "d(adapted)/d(params) (second order: use create_graph=True)"
    j._flows(e, e)
    _fails(j._flows, [e], e, "the measurement did not come back")
    _fails(j._flows, {"flows": True}, e, "the measurement did not come back")
    _fails(j._flows, {**e, "extra": 1}, e, "the measurement did not come back")
    for flows in (False, 1, None):
        _fails(j._flows, {**e, "flows": flows}, e, "the adapted parameters must depend on params (no detach)")
    _fails(j._flows, {**e, "d(adapted)/d(params)": None}, e, name + ": expected a sequence of 1, got NoneType")
    x = e["d(adapted)/d(params)"][0]
    bound = 1e-8 + 1e-6 * x.abs()                               # atol 1e-8, rtol 1e-6
    for k in range(3):                                         # each entry: just inside passes, just outside fails
        step = torch.zeros(3, dtype=torch.float64)
        step[k] = bound[k]
        j._flows({"flows": True, "d(adapted)/d(params)": [x + 0.99 * step]}, e)
        j._flows({"flows": True, "d(adapted)/d(params)": [x - 0.99 * step]}, e)
        with pytest.raises(AssertionError, match="^" + re.escape(name + "[0]")):
            j._flows({"flows": True, "d(adapted)/d(params)": [x + 1.01 * step]}, e)


# ---------------------------------------------------------------------------- references

def test_stay_at_origin_return_is_minus_100_times_the_mean_distance():
    n, total = 400, 0.0                                       # midpoint sum of -100 |g| over [-0.5, 0.5]^2
    for a in range(n):
        x = -0.5 + (a + 0.5) / n
        for b in range(n):
            y = -0.5 + (b + 0.5) / n
            total += math.sqrt(x * x + y * y)
    want = -100 * total / n ** 2
    got = j.references()["stay_at_origin_return"]()
    assert abs(got - want) < 1e-3 and abs(got + 38.2598) < 1e-4, (got, want)


def test_adaptation_predictions_are_b_and_d():
    assert j.references()["adaptation_predictions"]() == {"b", "d"}


def test_inner_step_is_one_step_on_undiscounted_linear_baseline_advantages():
    from metalib.rl.maml_rl import GaussianMLPPolicy, adapt, advantages, sample_trajectories
    from metalib.rl.nav2d import Nav2D

    ref = j.references()
    assert set(ref) == {"stay_at_origin_return", "inner_step", "adaptation_predictions"}
    inner_step = ref["inner_step"]
    assert inspect.signature(inner_step).parameters["gamma"].default == 0.99
    env = Nav2D(horizon=6)
    torch.manual_seed(0)
    pol = GaussianMLPPolicy(hidden=(5,), init_std=0.5).double()
    theta = {n: p.detach().requires_grad_() for n, p in pol.params().items()}
    g = torch.Generator().manual_seed(1)
    traj = sample_trajectories(pol, theta, env, env.sample_tasks(2, g).double(), 3, generator=g)
    for gamma in (0.99, 0.5):
        want = adapt(pol, theta, traj, advantages(traj, gamma, "linear", normalize=False), 0.1)
        for got in ([inner_step(pol, theta, traj, 0.1)] if gamma == 0.99 else []) + [inner_step(pol, theta, traj, 0.1, gamma)]:
            assert set(got) == set(want)
            for n in want:
                torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)
                assert got[n].requires_grad
        other = adapt(pol, theta, traj, advantages(traj, gamma, "linear", normalize=True), 0.1)
        assert any((other[n] - want[n]).abs().max() > 1e-6 for n in want)   # normalising would change the step
