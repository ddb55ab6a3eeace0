"""Meta-SGD (Li et al. 2017; notebook 09): `metalib.maml.sgd_step` and the learner's learned rates,
against plain references written out here (a hand-computed step, a per-task autograd loop)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalib import maml
from metalib.maml_train import MAMLLearner
from metalib.nets import MLP
from metalib.tasks import Task


def test_sgd_step_hand_computed_per_parameter_rates_and_nothing_in_place():
    params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    grads = {"w": torch.tensor([0.5, -1.0]), "b": torch.tensor([2.0])}
    rates = {"w": torch.tensor([0.1, 0.2]), "b": torch.tensor([-0.5])}
    new = maml.sgd_step(params, grads, rates)
    assert torch.allclose(new["w"], torch.tensor([0.95, 2.2])) and torch.allclose(new["b"], torch.tensor([4.0]))
    assert torch.equal(params["w"], torch.tensor([1.0, 2.0])), "sgd_step must not change its input"
    scalar = maml.sgd_step(params, grads, 0.1)  # MAML's α
    assert torch.allclose(scalar["w"], torch.tensor([0.95, 2.1])) and torch.allclose(scalar["b"], torch.tensor([2.8]))


def test_sgd_step_only_steps_the_named_gradients_and_asks_for_missing_rates():
    params = {"a": torch.ones(2), "b": torch.ones(2)}
    assert set(maml.sgd_step(params, {"a": torch.ones(2)}, 0.5)) == {"a"}
    with pytest.raises(ValueError, match="per-parameter rates"):
        maml.sgd_step(params, {"a": torch.ones(2)}, {"b": torch.ones(2)})


def test_sgd_step_is_differentiable_in_the_rates():
    g = torch.tensor([0.5, -1.0, 3.0])
    rate = torch.full((3,), 0.1, requires_grad=True)
    new = maml.sgd_step({"w": torch.zeros(3)}, {"w": g}, {"w": rate})
    (d_rate,) = torch.autograd.grad(new["w"].sum(), rate)
    assert torch.equal(d_rate, -g)  # d(θ − α g)/dα = −g


def _regression_task(T=3, n=6, seed=0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, 2 * n, 1, generator=gen, dtype=torch.float64)
    y = torch.sin(3 * x) + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return Task(x[:, :n], y[:, :n], x[:, n:], y[:, n:])


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_metasgd_learner_meta_gradient_reaches_weights_and_rates_like_a_plain_loop(strategy):
    torch.manual_seed(0)
    net = MLP(1, [8, 8], 1).double()
    learner = MAMLLearner(net, "metasgd", inner_lr=0.05, steps=2, strategy=strategy, loss_fn=F.mse_loss)
    with torch.no_grad():  # distinct rates per element, some negative: a scalar α could not pass
        for r in learner.lrs.values():
            r.copy_(0.1 * torch.randn(r.shape, dtype=r.dtype))
    task = _regression_task()
    loss, _ = learner.meta_loss(task)
    got = torch.autograd.grad(loss, list(learner.parameters()))

    params, rates = dict(net.named_parameters()), learner.learned_rates()
    rates = {n: r.clone().requires_grad_() for n, r in rates.items()}
    total = 0.0
    for b in range(task.batch_size):  # the reference: one task at a time, θ − α ⊙ g written out
        theta = dict(params)
        for _ in range(2):
            support = F.mse_loss(torch.func.functional_call(net, theta, (task.x_support[b],)), task.y_support[b])
            grads = torch.autograd.grad(support, list(theta.values()), create_graph=True)
            theta = {n: theta[n] - rates[n] * g for n, g in zip(theta, grads)}
        total = total + F.mse_loss(torch.func.functional_call(net, theta, (task.x_query[b],)), task.y_query[b])
    want = torch.autograd.grad(total / task.batch_size, [*params.values(), *rates.values()])
    names = [n for n, _ in learner.named_parameters()]
    by_name = dict(zip([*params, *("lrs." + n.replace(".", "__") for n in rates)], want))
    for n, g in zip(names, got):
        key = n.removeprefix("model.")
        assert torch.allclose(g, by_name[key], atol=1e-10, rtol=1e-8), n


def test_learned_rates_names_and_shapes_and_only_for_metasgd():
    net = MLP(1, [4], 1)
    rates = MAMLLearner(net, "metasgd", inner_lr=0.02).learned_rates()
    assert set(rates) == {n for n, _ in net.named_parameters()}
    assert all(rates[n].shape == p.shape and torch.all(rates[n] == 0.02) for n, p in net.named_parameters())
    with pytest.raises(ValueError, match="only Meta-SGD"):
        MAMLLearner(net, "maml").learned_rates()
