"""metalib.maml: behaviour that `make mutants MODULES=maml.py` showed untested by tests/test_maml.py and
tests/test_maml_gradient.py: the defaults (one second-order step), the error messages a caller reads,
and the inner-minibatch bounds. References are closed forms for a linear model with squared loss.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalib.maml import adapt, meta_loss, reptile_loss
from metalib.tasks import Task


def _linear(params, x):
    return x @ params["w"]


def _data():
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0], [2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    w = torch.tensor([0.5, -0.25], dtype=torch.float64, requires_grad=True)
    return x, y, w


def test_adapt_defaults_to_one_second_order_step():
    """θ1 = w - α (2/n) Xᵀ(Xw - y), and dθ1/dw = I - α (2/n) XᵀX (second order), by hand."""
    x, y, w = _data()
    alpha, n = 0.1, len(y)
    theta = adapt(_linear, {"w": w}, x, y, inner_lr=alpha, loss_fn=F.mse_loss)["w"]
    want = w.detach() - alpha * 2 / n * x.T @ (x @ w.detach() - y)
    torch.testing.assert_close(theta.detach(), want)
    jac = torch.stack([torch.autograd.grad(theta[i], w, retain_graph=True)[0] for i in range(2)])
    torch.testing.assert_close(jac, torch.eye(2, dtype=torch.float64) - alpha * 2 / n * x.T @ x)


def test_meta_loss_defaults_to_one_inner_step():
    x, y, w = _data()
    alpha = 0.1
    task = Task(x[None], y[None], x[None, :2], y[None, :2])
    theta = w.detach() - alpha * 2 / 4 * x.T @ (x @ w.detach() - y)
    loss, _ = meta_loss(_linear, {"w": w}, task, inner_lr=alpha, loss_fn=F.mse_loss)
    torch.testing.assert_close(loss.detach(), ((x[:2] @ theta - y[:2]) ** 2).mean())


def test_adapt_inner_batch_of_one_and_its_bounds():
    """batch_size=1: step i on example i alone; 0 and non-divisors are refused with the rule."""
    x, y, w = _data()
    alpha = 0.05
    theta = adapt(_linear, {"w": w}, x, y, inner_lr=alpha, steps=2, loss_fn=F.mse_loss, first_order=True,
                  batch_size=1)["w"]
    ref = w.detach().clone()
    for i in range(2):
        ref = ref - alpha * 2 * x[i] * (x[i] @ ref - y[i])
    torch.testing.assert_close(theta.detach(), ref)
    for b in (0, 3):
        with pytest.raises(ValueError, match=rf"^batch_size={b} must divide the 4 examples per task$"):
            adapt(_linear, {"w": w}, x, y, inner_lr=alpha, loss_fn=F.mse_loss, batch_size=b)


def test_error_messages_say_what_to_do():
    x, y, w = _data()
    task = Task(x[None], y[None], x[None], y[None])
    with pytest.raises(ValueError, match=r"^no parameter requires grad, so there is nothing to adapt: "
                                         r"call \.requires_grad_\(\) on the parameters to adapt$"):
        adapt(_linear, {"w": w.detach()}, x, y, inner_lr=0.1, loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match=r"^inner_lr is a dict of per-parameter rates \(Meta-SGD\) but has none "
                                         r"for 'w'$"):
        adapt(_linear, {"w": w}, x, y, inner_lr={"v": torch.ones(2)}, loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match=r"^optimizer must be one of \('sgd', 'adam'\), got 'rmsprop'$"):
        adapt(_linear, {"w": w}, x, y, inner_lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"^the inner Adam is first order only \(Reptile, FOMAML, testing\): pass "
                                         r"first_order=True or use optimizer='sgd' for second-order MAML$"):
        adapt(_linear, {"w": w}, x, y, inner_lr=0.1, optimizer="adam", loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match=r"^strategy='vmap' runs SGD inner steps only; use strategy='loop' for "
                                         r"optimizer='adam'$"):
        meta_loss(_linear, {"w": w}, task, inner_lr=0.1, strategy="vmap", optimizer="adam", first_order=True)
    with pytest.raises(ValueError, match=r"^meta_loss expects a batch of tasks \(leading dimension B\); for one "
                                         r"task use task.select\(slice\(0, 1\)\) or adapt\(\) directly$"):
        meta_loss(_linear, {"w": w}, Task(y, y, y, y), inner_lr=0.1)
    needs_bf = r"^strategy='batched' needs bfmodel=metalib\.maml_batched\.batched_functional\(model\)$"
    with pytest.raises(ValueError, match=needs_bf):
        meta_loss(_linear, {"w": w}, task, inner_lr=0.1, strategy="batched")
    with pytest.raises(ValueError, match=needs_bf):
        reptile_loss(_linear, {"w": w}, task, inner_lr=0.1, steps=1, strategy="batched")
    with pytest.raises(ValueError, match=r"^Reptile takes one inner learning rate \(a float\), not per-parameter "
                                         r"rates$"):
        reptile_loss(_linear, {"w": w}, task, inner_lr={"w": torch.ones(2)}, steps=1)
    with pytest.raises(ValueError, match=r"^Reptile supports strategy 'loop' or 'batched', got 'vmap'$"):
        reptile_loss(_linear, {"w": w}, task, inner_lr=0.1, steps=1, strategy="vmap")


def test_reptile_defaults_to_the_loop_strategy_and_its_gradient_is_theta_minus_phi():
    """One SGD step per task: φ = w - α (2/n) Xᵀ(Xw - y); the loss's gradient is w - φ."""
    x, y, w = _data()
    alpha = 0.1
    task = Task(x[None], y[None], x[None], y[None])
    loss, _ = reptile_loss(_linear, {"w": w}, task, inner_lr=alpha, steps=1, loss_fn=F.mse_loss)
    loss.backward()
    phi = w.detach() - alpha * 2 / 4 * x.T @ (x @ w.detach() - y)
    torch.testing.assert_close(w.grad, w.detach() - phi)
    torch.testing.assert_close(loss.detach(), ((x @ phi - y) ** 2).mean())
