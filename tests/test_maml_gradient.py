"""Problem 1: the four computations of g_MAML agree, and the training code computes the same thing.

References: the closed form on quadratics, finite differences (float64), and each exact method
against the others (explicit Hessian product, HVP reverse accumulation, unrolled autograd).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalib import SinusoidTasks, maml, maml_gradient as mg, problem1 as p1
from metalib.nets import MLP
from metalib.profiling import MemoryTracker, measure


def test_agreement_table_every_method_within_tolerance():
    rows = p1.agreement(ks=(1, 2, 5))
    print("\n" + p1.agreement_table(rows))
    assert {r["method"] for r in rows} == set(p1.TOLERANCES)
    bad = [r for r in rows if not r["rel_error"] <= p1.TOLERANCES[r["method"]]]
    assert not bad, f"methods disagree beyond tolerance: {bad}"


def test_agreement_detects_a_wrong_gradient():
    """The table is not vacuous: dropping the Hessian term (first order) breaks agreement."""
    prob = p1.quadratic_problem(seed=3)
    g_fo = mg.g_first_order(prob.inner, prob.outer, prob.theta0, prob.alpha, 2)
    assert mg.relative_error(g_fo, prob.closed_form(2)) > 1e-2


def test_zero_inner_steps_is_the_plain_gradient():
    prob = p1.quadratic_problem(n=4, seed=1)
    plain = prob.outer.A @ prob.theta0 - prob.outer.b
    for fn in (*p1.METHODS.values(), mg.g_first_order, mg.g_maml_finite_differences):
        torch.testing.assert_close(fn(prob.inner, prob.outer, prob.theta0, prob.alpha, 0), plain)
    torch.testing.assert_close(prob.closed_form(0), plain)


def test_one_step_matches_the_hand_formula():
    """k=1 on a quadratic: g = (I − αA)(C θ₁ − d), θ₁ = θ₀ − α(Aθ₀ − b)."""
    prob = p1.quadratic_problem(n=3, seed=2, alpha=0.2)
    A, b, C, d = prob.inner.A, prob.inner.b, prob.outer.A, prob.outer.b
    theta1 = prob.theta0 - 0.2 * (A @ prob.theta0 - b)
    expected = (torch.eye(3, dtype=torch.float64) - 0.2 * A) @ (C @ theta1 - d)
    torch.testing.assert_close(mg.g_maml_hvp(prob.inner, prob.outer, prob.theta0, 0.2, 1), expected)


def test_hvp_equals_hessian_times_vector():
    prob = p1.regression_problem(seed=4)
    v = torch.randn(prob.theta0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    H = torch.func.jacrev(torch.func.grad(prob.inner))(prob.theta0)
    torch.testing.assert_close(mg.hvp(prob.inner, prob.theta0, v), H @ v, rtol=1e-10, atol=1e-12)


def test_first_order_maml_is_the_query_gradient_at_adapted_parameters():
    torch.manual_seed(5)
    net = MLP(1, [10, 10], 1, activation=nn.Tanh).double()
    fmodel, params = maml.functional(net)
    theta0, loss_on, _ = mg.flatten_model(fmodel, params, F.mse_loss)
    gen = torch.Generator().manual_seed(5)
    task = SinusoidTasks().sample_with_params(1, 10, 10, generator=gen, dtype=torch.float64)[0]
    loss, _ = maml.meta_loss(fmodel, params, task, inner_lr=0.05, steps=3, first_order=True, loss_fn=F.mse_loss)
    g_lib = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()))])
    inner, outer = loss_on(task.x_support[0], task.y_support[0]), loss_on(task.x_query[0], task.y_query[0])
    torch.testing.assert_close(g_lib, mg.g_first_order(inner, outer, theta0, 0.05, 3), rtol=1e-10, atol=1e-12)


def test_first_order_error_vanishes_with_the_step_size_and_grows_with_it():
    errs = p1.first_order_errors(p1.regression_problem(), alphas=[1e-5, 1e-3, 1e-1], ks=[1, 3])
    assert errs[0].max() < 1e-3, errs
    assert (errs[2] > errs[1]).all() and (errs[1] > errs[0]).all(), errs


def test_bad_inputs_give_clear_errors():
    prob = p1.quadratic_problem(n=3)
    with pytest.raises(ValueError, match="g_maml_hvp"):
        mg.g_maml_hessian(prob.inner, prob.outer, prob.theta0, 0.1, 1, max_params=2)
    with pytest.raises(ValueError, match="float64"):
        mg.g_maml_finite_differences(prob.inner, prob.outer, prob.theta0.float(), 0.1, 1)
    with pytest.raises(ValueError, match="one per mini-batch"):
        mg.g_maml_hvp([prob.inner, prob.inner], prob.outer, prob.theta0, 0.1, 3)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        mg.g_maml_autograd(prob.inner, prob.outer, prob.theta0.view(1, 3), 0.1, 1)
    with pytest.raises(ValueError, match="k"):
        mg.g_maml_hvp(prob.inner, prob.outer, prob.theta0, 0.1, -1)


def test_per_step_batches_differ_from_a_single_batch():
    """With a new mini-batch per inner step the gradient changes, and all methods still agree."""
    multi = p1.regression_problem(per_step_batches=True, seed=1)
    single_inner = multi.inner(1)[0]
    g_multi = mg.g_maml_hvp(multi.inner(3), multi.outer, multi.theta0, multi.alpha, 3)
    g_single = mg.g_maml_hvp(single_inner, multi.outer, multi.theta0, multi.alpha, 3)
    assert mg.relative_error(g_multi, g_single) > 1e-3
    with pytest.raises(ValueError, match="max_steps"):
        multi.inner(6)


# --- metalib.maml basics -------------------------------------------------------------------

def test_adapt_is_pure_and_differentiable():
    torch.manual_seed(0)
    net = MLP(1, [8], 1)
    fmodel, params = maml.functional(net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = torch.randn(5, 1), torch.randn(5, 1)
    assert maml.adapt(fmodel, params, x, y, inner_lr=0.1, steps=0, loss_fn=F.mse_loss) == params
    theta = maml.adapt(fmodel, params, x, y, inner_lr=0.1, steps=2, loss_fn=F.mse_loss)
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]), f"adapt modified the module's parameter {n}"
        assert theta[n].grad_fn is not None and not torch.equal(theta[n], p)
    with pytest.raises(ValueError, match="steps"):
        maml.adapt(fmodel, params, x, y, inner_lr=0.1, steps=-1)
    frozen = {n: p.detach() for n, p in params.items()}
    with pytest.raises(ValueError, match="requires_grad"):
        maml.adapt(fmodel, frozen, x, y, inner_lr=0.1, steps=1)


def test_meta_loss_needs_a_batch_of_tasks():
    fmodel, params = maml.functional(MLP(1, [4], 1))
    gen = torch.Generator().manual_seed(0)
    task = SinusoidTasks().sample(2, 5, 5, generator=gen)
    loss, out = maml.meta_loss(fmodel, params, task, inner_lr=0.01, steps=1, loss_fn=F.mse_loss)
    assert loss.dim() == 0 and out.shape == (2, 5, 1)
    with pytest.raises(ValueError, match="batch of tasks"):
        maml.meta_loss(fmodel, params, task.select(0).select(0), inner_lr=0.01, loss_fn=F.mse_loss)


# --- the memory tracker used by notebook 06 -------------------------------------------------

def test_memory_tracker_counts_live_tensors_once():
    with MemoryTracker() as tr:
        for _ in range(5):
            x = torch.ones(1000, dtype=torch.float64)
            y = x.view(10, 100)  # a view shares the storage
            del x, y
    assert tr.peak == 8000 and tr.current == 0 and tr.largest == 1000
    with MemoryTracker() as tr:
        kept = [torch.ones(1000) for _ in range(3)]
    assert tr.peak == tr.current == 12000
    assert len(kept) == 3


def test_autograd_memory_grows_with_k_and_hvp_never_forms_a_hessian():
    prob = p1.regression_problem(hidden=(12, 12), k_support=40)
    n = prob.theta0.numel()
    peaks = [measure(lambda: mg.g_maml_autograd(prob.inner, prob.outer, prob.theta0, 0.01, k), repeats=1).peak_bytes
             for k in (1, 2, 4)]
    assert peaks == sorted(peaks) and peaks[-1] > 2 * peaks[0], peaks
    hvp = measure(lambda: mg.g_maml_hvp(prob.inner, prob.outer, prob.theta0, 0.01, 2), repeats=1)
    hess = measure(lambda: mg.g_maml_hessian(prob.inner, prob.outer, prob.theta0, 0.01, 2), repeats=1)
    assert hvp.largest_tensor < n * n / 10 <= hess.largest_tensor
