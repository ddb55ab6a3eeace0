"""metalib.maml_gradient: behaviour that `make mutants MODULES=maml_gradient.py` showed untested by
tests/test_maml_gradient.py: the random quadratic's construction, the size limits and the error
messages a caller reads. References are closed forms (eigenvalues, counts) and exact messages.
"""
from __future__ import annotations

import re

import pytest
import torch

from metalib import maml_gradient as mg


def test_random_quadratic_depends_on_its_generator_only():
    """Two draws from equally seeded generators are identical whatever the global RNG's state."""
    torch.manual_seed(1)
    q1 = mg.Quadratic.random(4, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    q2 = mg.Quadratic.random(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(q1.A, q2.A) and torch.equal(q1.b, q2.b)


@pytest.mark.parametrize("eig", [(0.5, 2.0), (3.0, 4.0)])
def test_random_quadratic_is_symmetric_with_eigenvalues_in_the_range(eig):
    kw = {} if eig == (0.5, 2.0) else {"eig": eig}  # the default range is (0.5, 2)
    q = mg.Quadratic.random(6, generator=torch.Generator().manual_seed(0), **kw)
    assert q.A.dtype == q.b.dtype == torch.float64 and q.b.shape == (6,)
    torch.testing.assert_close(q.A, q.A.T, rtol=0, atol=0)
    lam = torch.linalg.eigvalsh(q.A)
    assert lam.min() >= eig[0] - 1e-12 and lam.max() <= eig[1] + 1e-12, lam


def test_finite_differences_refuse_more_than_2048_parameters_by_default():
    """The limit is checked before any inner loop runs: n = 2049 fails at once, with the cost."""
    quad = mg.Quadratic(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    theta = torch.zeros(2049, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^finite differences take 2n=4098 inner loops; n=2049 > max_params=2048$"):
        mg.g_maml_finite_differences(quad, quad, theta, 0.1, 1)


def test_finite_differences_accept_exactly_max_params():
    """n = max_params is allowed; the result is the closed form (central differences are exact on quadratics)."""
    gen = torch.Generator().manual_seed(0)
    inner, outer = mg.Quadratic.random(3, generator=gen), mg.Quadratic.random(3, generator=gen)
    theta = torch.randn(3, generator=gen, dtype=torch.float64)
    g = mg.g_maml_finite_differences(inner, outer, theta, 0.1, 2, max_params=3)
    torch.testing.assert_close(g, mg.g_maml_quadratic(inner, outer, theta, 0.1, 2), rtol=1e-6, atol=1e-8)


def test_finite_differences_ask_for_float64_in_full():
    quad = mg.Quadratic(torch.eye(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"^finite differences need float64 parameters \(got torch.float32\): pass "
                                         r"theta0.double\(\) and losses that work in float64$"):
        mg.g_maml_finite_differences(quad, quad, torch.zeros(2), 0.1, 1)


def test_relative_error_by_hand_and_against_zero():
    """‖(3, 5) − (3, 4)‖ / ‖(3, 4)‖ = 1/5, also below unit norm (0.1 / 0.5); against an exact zero it is the
    absolute error ‖(3, 4)‖ = 5."""
    exact = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert mg.relative_error(torch.tensor([3.0, 5.0]), exact) == pytest.approx(0.2, abs=1e-12)
    assert mg.relative_error(torch.tensor([0.3, 0.5], dtype=torch.float64), exact / 10) == pytest.approx(0.2, abs=1e-12)
    assert mg.relative_error(exact, torch.zeros(2)) == pytest.approx(5.0, abs=1e-12)


def test_hessian_method_refuses_more_than_4096_parameters_with_the_memory_it_would_need():
    """n = 4097 float64: 4097² × 8 B = 0.13 GiB per Hessian (float32: 0.06 GiB), refused before any work."""
    quad = mg.Quadratic(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    for dtype, gib in ((torch.float64, "0.13"), (torch.float32, "0.06")):
        with pytest.raises(ValueError, match=rf"^g_maml_hessian forms n x n Hessians: n=4097 parameters need {gib} GiB "
                                             r"each \(limit max_params=4096\); use g_maml_hvp, which never forms one$"):
            mg.g_maml_hessian(quad, quad, torch.zeros(4097, dtype=dtype), 0.1, 1)


def test_hessian_method_accepts_exactly_max_params():
    gen = torch.Generator().manual_seed(1)
    inner, outer = mg.Quadratic.random(3, generator=gen), mg.Quadratic.random(3, generator=gen)
    theta = torch.randn(3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(mg.g_maml_hessian(inner, outer, theta, 0.1, 2, max_params=3),
                               mg.g_maml_quadratic(inner, outer, theta, 0.1, 2))


@pytest.mark.parametrize("theta0,got", [(torch.zeros(1, 3), "(1, 3)"), ([0.0, 1.0], "list")])
def test_a_non_vector_theta_is_refused_with_its_shape_or_type(theta0, got):
    with pytest.raises(ValueError, match=rf"^theta0 must be a flat parameter vector of shape \(n,\), got "
                                         rf"{re.escape(got)}: use metalib.maml_gradient.flatten_model for a network$"):
        mg.g_maml_autograd(lambda th: th.sum(), lambda th: th.sum(), theta0, 0.1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the identity matrices live on theta0's device")
def test_hessian_and_closed_form_methods_run_on_the_parameters_device():
    gen = torch.Generator().manual_seed(2)
    inner, outer = mg.Quadratic.random(3, generator=gen), mg.Quadratic.random(3, generator=gen)
    theta = torch.randn(3, generator=gen, dtype=torch.float64)
    want = mg.g_maml_quadratic(inner, outer, theta, 0.1, 2)
    cuda = [mg.Quadratic(q.A.cuda(), q.b.cuda()) for q in (inner, outer)]
    for method in (mg.g_maml_hessian, mg.g_maml_quadratic):
        got = method(*cuda, theta.cuda(), 0.1, 2)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want)
