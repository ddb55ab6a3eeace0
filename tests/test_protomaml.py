"""ProtoMAML (metalib.protomaml, MAMLLearner(method="protomaml")): a 0-step ProtoMAML is a ProtoNet; the
batched path equals the per-task loop; the meta-gradient equals a plain hand-written computation and
reaches the backbone through the prototype-initialised head."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalib import protomaml
from metalib.maml_batched import batched_functional, fast_functional
from metalib.maml_train import MAMLConfig, MAMLLearner, build_learner
from metalib.nets import Conv4
from metalib.protonet import prototypes, similarity_logits
from metalib.tasks import Task


def _task(T=3, n_way=3, k=2, q=4, dtype=torch.float64, seed=0, shuffle=True) -> Task:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(T, n_way * k, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    xq = torch.rand(T, n_way * q, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    ys = torch.arange(n_way).repeat_interleave(k).expand(T, -1).clone()
    if shuffle:  # any support order: the head must not rely on class-major rows
        ys = torch.stack([ys[t, torch.randperm(n_way * k, generator=g)] for t in range(T)])
    yq = torch.arange(n_way).repeat_interleave(q).expand(T, -1)
    return Task(xs, ys, xq, yq)


def _backbone(dtype=torch.float64, hidden=8):
    torch.manual_seed(0)
    return Conv4(hidden=hidden, running_stats=False).to(dtype)


def _grads(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])


def test_zero_steps_is_exactly_the_squared_euclidean_protonet():
    net, task = _backbone(), _task()
    fembed, params = fast_functional(net), dict(net.named_parameters())
    _, logits = protomaml.meta_loss(fembed, params, task, inner_lr=0.4, steps=0)
    # the ProtoNet's embeddings, each task's BatchNorm statistics its own (as MAML's per-task forward)
    z_s = torch.stack([net(x) for x in task.x_support])  # (T, S, D)
    z_q = torch.stack([net(x) for x in task.x_query])  # (T, M, D)
    proto = similarity_logits(z_q, prototypes(z_s, task.y_support, 3), "euclidean")
    # logits differ by the per-query constant ‖z‖², which no softmax sees
    torch.testing.assert_close(logits - (z_q ** 2).sum(-1, keepdim=True), proto, rtol=0, atol=1e-10)
    torch.testing.assert_close(logits.log_softmax(-1), proto.log_softmax(-1), rtol=0, atol=1e-10)


def test_inner_step_is_the_partial_gradient_with_the_head_held_fixed():
    net, task = _backbone(), _task()
    fembed, params = fast_functional(net), dict(net.named_parameters())
    xs, ys = task.x_support[0], task.y_support[0]
    theta0 = protomaml.init_head(fembed, params, xs, ys, 3)
    theta1 = protomaml.adapt(protomaml.with_head(fembed), theta0, xs, ys, inner_lr=0.1, steps=1)
    fixed = {n: p.detach().requires_grad_() for n, p in theta0.items()}  # every entry its own variable
    g = torch.autograd.grad(F.cross_entropy(protomaml.with_head(fembed)(fixed, xs), ys), list(fixed.values()))
    for (n, p), gn in zip(fixed.items(), g):
        torch.testing.assert_close(theta1[n].detach(), p - 0.1 * gn, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("steps,first_order", [(1, False), (2, False), (2, True)])
def test_batched_path_equals_the_per_task_loop(steps, first_order):
    net, task = _backbone(), _task()
    params = dict(net.named_parameters())
    kw = dict(inner_lr=0.1, steps=steps, first_order=first_order)
    loss_l, out_l = protomaml.meta_loss(fast_functional(net), params, task, strategy="loop", **kw)
    loss_b, out_b = protomaml.meta_loss(fast_functional(net), params, task, strategy="batched",
                                        bfembed=batched_functional(net), **kw)
    torch.testing.assert_close(out_b, out_l, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(_grads(loss_b, params), _grads(loss_l, params), rtol=1e-8, atol=1e-10)


def _plain_meta_loss(net, task, inner_lr, steps, detach_head=False):
    """One task at a time, by hand: prototypes by a loop over classes, SGD steps with autograd.grad."""
    losses = []
    for b in range(task.batch_size):
        xs, ys, xq, yq = (t[b] for t in task)
        body = dict(net.named_parameters())
        z = torch.func.functional_call(net, body, (xs,))
        c = torch.stack([z[ys == k].mean(0) for k in range(int(ys.max()) + 1)])
        w, bias = 2 * c, -(c * c).sum(1)
        if detach_head:
            w, bias = w.detach().requires_grad_(), bias.detach().requires_grad_()
        # independent inner-loop variables: the support loss is differentiated with the head held fixed
        theta = {**{n: p.clone() for n, p in body.items()}, "W": w, "b": bias}

        def f(th, x):
            body = {n: p for n, p in th.items() if n not in ("W", "b")}
            return torch.func.functional_call(net, body, (x,)) @ th["W"].T + th["b"]
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(f(theta, xs), ys), list(theta.values()), create_graph=True)
            theta = {n: p - inner_lr * gi for (n, p), gi in zip(theta.items(), g)}
        losses.append(F.cross_entropy(f(theta, xq), yq))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_learner_meta_gradient_equals_a_plain_computation_and_flows_through_the_head(strategy):
    net, task = _backbone(), _task(seed=1)
    learner = MAMLLearner(net, "protomaml", inner_lr=0.1, steps=2, strategy=strategy)
    params = dict(net.named_parameters())
    loss, _ = learner.meta_loss(task)
    got = _grads(loss, params)
    ref = _grads(_plain_meta_loss(net, task, 0.1, 2), params)
    assert float((got - ref).norm() / ref.norm()) < 1e-9
    # the prototypes that set the head carry part of the meta-gradient: without that path it differs
    cut = _grads(_plain_meta_loss(net, task, 0.1, 2, detach_head=True), params)
    assert float((cut - ref).norm() / ref.norm()) > 1e-3


def test_any_backbone_through_functional_call_gives_the_fast_path():
    net, task = _backbone(), _task()
    params = dict(net.named_parameters())
    generic = lambda p, x: torch.func.functional_call(net, p, (x,))  # noqa: E731  (knows no "head.*" entries)
    kw = dict(inner_lr=0.1, steps=1)
    _, out = protomaml.meta_loss(generic, params, task, **kw)
    _, ref = protomaml.meta_loss(fast_functional(net), params, task, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_learner_handles_any_way_and_round_trips_through_the_config():
    cfg = MAMLConfig("protomaml", hidden=8, n_way=5, inner_lr=0.1)
    learner = build_learner(cfg)
    assert learner.model.head is None  # the head comes from the prototypes
    task = _task(T=2, n_way=7, k=1, q=2, dtype=torch.float32)  # trained 5-way, tested 7-way
    assert learner.predict(task, 1).shape == (2, 14, 7)
    with pytest.raises(ValueError, match="without head"):
        MAMLLearner(Conv4(hidden=8, n_classes=5, running_stats=False), "protomaml")
    with pytest.raises(ValueError, match="omniglot"):
        MAMLConfig("protomaml", "sinusoid")
