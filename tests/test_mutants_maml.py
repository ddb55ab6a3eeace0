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


def test_reptile_logs_the_query_loss_of_vector_targets():
    """Targets of shape (T, M, d): the logged loss is the mean squared error over every task, point and
    output at the adapted φ_b (flattening the targets to (T·M·d,) instead of (T·M, d) is a bug)."""
    gen = torch.Generator().manual_seed(0)
    T, n, D, d, alpha = 2, 4, 2, 3, 0.1
    x = torch.randn(T, n, D, generator=gen, dtype=torch.float64)
    y = torch.randn(T, n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(D, d, generator=gen, dtype=torch.float64, requires_grad=True)
    loss, outputs = reptile_loss(_linear, {"w": w}, Task(x, y, x, y), inner_lr=alpha, steps=1, loss_fn=F.mse_loss)
    phis = [w.detach() - alpha * 2 / (n * d) * x[b].T @ (x[b] @ w.detach() - y[b]) for b in range(T)]
    torch.testing.assert_close(outputs, torch.stack([x[b] @ phis[b] for b in range(T)]))
    torch.testing.assert_close(loss.detach(), torch.stack([((x[b] @ phis[b] - y[b]) ** 2).mean() for b in range(T)]).mean())


def _batched_linear(params, x):
    """The linear model for T tasks at once: w (T, D), x (T, n, D) -> (T, n)."""
    return torch.einsum("tnd,td->tn", x, params["w"])


def _two_tasks():
    x, y, w = _data()
    return Task(torch.stack([x, x.flip(0)]), torch.stack([y, y.flip(0)]), x[None, :2].expand(2, 2, 2),
                y[None, :2].expand(2, 2)), w


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_reptile_inner_batch_steps_on_the_shuffled_pooled_examples(strategy):
    """inner_batch=1: step i on pooled example perm[i], perm = randperm(6, generator) (the seeded generator's
    permutation, not the global RNG's); θ's gradient is θ - mean φ, recomputed by hand."""
    task, w = _two_tasks()
    alpha, steps = 0.05, 3
    torch.manual_seed(123)  # the global RNG must not matter
    loss, _ = reptile_loss(_linear, {"w": w}, task, inner_lr=alpha, steps=steps, loss_fn=F.mse_loss,
                           strategy=strategy, bfmodel=_batched_linear, inner_batch=1,
                           generator=torch.Generator().manual_seed(7))
    loss.backward()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(7))
    phis = []
    for b in range(2):
        xs, ys = torch.cat([task.x_support[b], task.x_query[b]])[perm], torch.cat([task.y_support[b], task.y_query[b]])[perm]
        phi = w.detach().clone()
        for i in range(steps):
            phi = phi - alpha * 2 * xs[i] * (xs[i] @ phi - ys[i])
        phis.append(phi)
    torch.testing.assert_close(w.grad, w.detach() - torch.stack(phis).mean(0))


def test_batched_inner_batch_bounds_count_examples_per_task():
    task, w = _two_tasks()  # 4 support examples per task, 2 tasks, 2 features
    with pytest.raises(ValueError, match=r"^batch_size=3 must divide the 4 examples per task$"):
        adapt(_batched_linear, {"w": w.expand(2, 2)}, task.x_support, task.y_support, inner_lr=0.1,
              loss_fn=F.mse_loss, batched=True, batch_size=3)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_meta_loss_adapts_only_the_named_parameters(strategy):
    """ANIL-style names=["w"]: the bias b keeps its value; θ_w after one step by hand."""
    x, y, w = _data()
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    task = Task(x[None], y[None], x[None], y[None])

    def affine(p, x):
        return x @ p["w"] + p["b"]
    alpha = 0.1
    loss, _ = meta_loss(affine, {"w": w, "b": b}, task, inner_lr=alpha, loss_fn=F.mse_loss, names=["w"],
                        strategy=strategy)
    r = x @ w.detach() + 0.5 - y
    theta_w = w.detach() - alpha * 2 / 4 * x.T @ r
    torch.testing.assert_close(loss.detach(), ((x @ theta_w + 0.5 - y) ** 2).mean())


def test_reptile_adapts_only_the_named_parameters():
    x, y, w = _data()
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    task = Task(x[None], y[None], x[None], y[None])

    def affine(p, x):
        return x @ p["w"] + p["b"]
    loss, _ = reptile_loss(affine, {"w": w, "b": b}, task, inner_lr=0.1, steps=1, loss_fn=F.mse_loss, names=["w"])
    loss.backward()
    assert b.grad is None or float(b.grad) == 0.0, "b is not adapted, so Reptile does not move it"
    r = x @ w.detach() + 0.5 - y
    torch.testing.assert_close(w.grad, 0.1 * 2 / 4 * x.T @ r)


def test_meta_loss_accepts_tasks_of_scalar_inputs():
    """x_support (B, n): one number per example (a 2-D batch is still a batch of tasks)."""
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    task = Task(x, 3 * x, x, 3 * x)
    loss, _ = meta_loss(lambda p, x: p["w"] * x, {"w": w}, task, inner_lr=0.1, loss_fn=F.mse_loss)
    theta = 2.0 - 0.1 * (2 * (1 * (2 - 3) * 1 + 2 * (4 - 6)) / 2)  # dL/dw = mean 2 (w x - 3x) x = -5
    torch.testing.assert_close(loss.detach(), ((theta * x - 3 * x) ** 2).mean())


def test_vmap_meta_loss_refuses_parameters_without_grad():
    x, y, w = _data()
    with pytest.raises(ValueError, match=r"^no parameter requires grad, so there is nothing to adapt"):
        meta_loss(_linear, {"w": w.detach()}, Task(x[None], y[None], x[None], y[None]), inner_lr=0.1,
                  loss_fn=F.mse_loss, strategy="vmap")
