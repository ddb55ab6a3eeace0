"""MAML family (metalib.maml, metalib.maml_batched, metalib.maml_train): every strategy and every
method against the plain per-task loop, explicit formulas and float64."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import metalib
from metalib import maml
from metalib.maml_batched import batched_functional
from metalib.maml_train import MAMLLearner
from metalib.nets import MLP, Conv4
from metalib.tasks import Task


def _classification_task(T=3, n_way=3, k=2, q=4, dtype=torch.float32, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)  # drawn in float64, so both dtypes see the same images
    xs = torch.rand(T, n_way * k, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    xq = torch.rand(T, n_way * q, 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
    ys = torch.arange(n_way).repeat_interleave(k).expand(T, -1)
    yq = torch.arange(n_way).repeat_interleave(q).expand(T, -1)
    return Task(xs, ys, xq, yq)


def _conv4(dtype=torch.float32, hidden=8, n_way=3, batch_norm=True):
    torch.manual_seed(0)
    return Conv4(hidden=hidden, n_classes=n_way, running_stats=False, batch_norm=batch_norm).to(dtype)


def _meta_grad(model, task, **kw):
    fmodel, params = maml.functional(model)
    loss, _ = maml.meta_loss(fmodel, params, task, bfmodel=batched_functional(model), **kw)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("steps,first_order", [(1, False), (2, False), (2, True)])
def test_batched_strategy_gives_the_loop_meta_gradient_with_per_task_batchnorm(dtype, tol, steps, first_order):
    model, task = _conv4(dtype), _classification_task(dtype=dtype)
    kw = dict(inner_lr=0.4, steps=steps, first_order=first_order)
    ref = _meta_grad(model, task, strategy="loop", **kw)
    assert _rel(_meta_grad(model, task, strategy="batched", **kw), ref) < tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("steps,first_order", [(1, False), (2, False), (2, True)])
def test_vmap_strategy_gives_the_loop_meta_gradient_without_batchnorm(dtype, tol, steps, first_order):
    model, task = _conv4(dtype, batch_norm=False), _classification_task(dtype=dtype)
    kw = dict(inner_lr=0.4, steps=steps, first_order=first_order)
    ref = _meta_grad(model, task, strategy="loop", **kw)
    assert _rel(_meta_grad(model, task, strategy="vmap", **kw), ref) < tol


def test_vmap_second_order_through_batchnorm_is_wrong_so_the_learner_refuses_it():
    """torch.func.vmap of BatchNorm's double backward gives a wrong MAML gradient in torch 2.13 (even in
    float64), which is why the learner refuses vmap for BatchNorm models. If a PyTorch release fixes it,
    this test fails and the refusal can go."""
    model, task = _conv4(torch.float64), _classification_task(dtype=torch.float64)
    ref = _meta_grad(model, task, strategy="loop", inner_lr=0.4, steps=1)
    assert _rel(_meta_grad(model, task, strategy="vmap", inner_lr=0.4, steps=1), ref) > 1e-4
    with pytest.raises(ValueError, match="BatchNorm"):
        MAMLLearner(_conv4(), strategy="vmap")


def test_batchnorm_statistics_are_per_task():
    """Mixing the tasks' statistics (one BatchNorm over the whole meta-batch) changes the gradient:
    the agreement above is not an accident of BatchNorm being harmless here."""
    model, task = _conv4(torch.float64), _classification_task(dtype=torch.float64)
    fmodel, params = maml.functional(model)
    ref = _meta_grad(model, task, strategy="loop", inner_lr=0.4, steps=1)
    flat = Task(*(t.reshape(1, -1, *t.shape[2:]) for t in task))  # one task holding all three
    loss, _ = maml.meta_loss(fmodel, params, flat, inner_lr=0.4, steps=1)
    mixed = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])
    assert _rel(mixed, ref) > 1e-3


def _meta_sgd_by_hand(fmodel, params, task, lrs, steps):
    """Reference: each task's Meta-SGD inner loop written out with torch.autograd.grad (no metalib.maml)."""
    losses, outs = [], []
    for b in range(task.batch_size):
        theta = dict(params)
        for _ in range(steps):
            support = F.mse_loss(fmodel(theta, task.x_support[b]), task.y_support[b])
            grads = torch.autograd.grad(support, list(theta.values()), create_graph=True)
            theta = {n: p - lrs[n] * g for (n, p), g in zip(theta.items(), grads)}
        outs.append(fmodel(theta, task.x_query[b]))
        losses.append(F.mse_loss(outs[-1], task.y_query[b]))
    return torch.stack(losses).mean(), torch.stack(outs)


@pytest.mark.parametrize("strategy", ["loop", "batched", "vmap"])
def test_mlp_sinusoid_strategies_agree_and_meta_sgd_rates_get_gradients(strategy):
    torch.manual_seed(0)
    net = MLP(1, [16, 16], 1).double()
    task = metalib.SinusoidTasks().sample(4, 5, 7, generator=torch.Generator().manual_seed(1))
    task = Task(*(t.double() for t in task))
    fmodel, params = maml.functional(net)
    lrs = {n: torch.full_like(p, 0.01, requires_grad=True) for n, p in params.items()}
    args = dict(inner_lr=lrs, steps=2, loss_fn=F.mse_loss, bfmodel=batched_functional(net))
    loss, out = maml.meta_loss(fmodel, params, task, strategy=strategy, **args)
    ref, ref_out = _meta_sgd_by_hand(fmodel, params, task, lrs, steps=2)  # independent of every strategy
    leaves = list(params.values()) + list(lrs.values())
    g = torch.cat([x.flatten() for x in torch.autograd.grad(loss, leaves)])
    g_ref = torch.cat([x.flatten() for x in torch.autograd.grad(ref, leaves)])
    assert out.shape == (4, 7, 1) and torch.allclose(out, ref_out)
    assert _rel(g, g_ref) < 1e-10
    assert float(g[-sum(p.numel() for p in lrs.values()):].abs().sum()) > 0  # the rates are learned


def test_one_step_by_hand_and_first_order_gradient_is_the_query_gradient_at_theta_k():
    torch.manual_seed(0)
    net = MLP(1, [8], 1).double()
    task = Task(*(t.double() for t in metalib.SinusoidTasks().sample(1, 5, 5, generator=torch.Generator().manual_seed(2))))
    fmodel, params = maml.functional(net)
    xs, ys = task.x_support[0], task.y_support[0]
    g = torch.autograd.grad(F.mse_loss(fmodel(params, xs), ys), list(params.values()))
    by_hand = {n: p - 0.1 * gi for (n, p), gi in zip(params.items(), g)}
    theta = maml.adapt(fmodel, params, xs, ys, inner_lr=0.1, steps=1, loss_fn=F.mse_loss)
    assert all(torch.allclose(theta[n], by_hand[n]) for n in params)
    loss, _ = maml.meta_loss(fmodel, params, task, inner_lr=0.1, steps=1, first_order=True, loss_fn=F.mse_loss)
    fo = torch.autograd.grad(loss, list(params.values()))
    at_k = {n: t.detach().requires_grad_() for n, t in theta.items()}
    expected = torch.autograd.grad(F.mse_loss(fmodel(at_k, task.x_query[0]), task.y_query[0]), list(at_k.values()))
    assert all(torch.allclose(a, b) for a, b in zip(fo, expected))


def test_anil_adapts_only_the_head_and_matches_across_strategies():
    model, task = _conv4(torch.float64), _classification_task(dtype=torch.float64)
    fmodel, params = maml.functional(model)
    head = [n for n in params if n.startswith("head.")]
    theta = maml.adapt(fmodel, params, task.x_support[0], task.y_support[0], inner_lr=0.4, steps=2, names=head)
    assert all(theta[n] is params[n] for n in params if n not in head)
    assert all(not torch.equal(theta[n], params[n]) for n in head)
    ref = _meta_grad(model, task, strategy="loop", inner_lr=0.4, steps=2, names=head)
    assert _rel(_meta_grad(model, task, strategy="batched", inner_lr=0.4, steps=2, names=head), ref) < 1e-10


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_reptile_gradient_is_theta_minus_mean_of_the_adapted_parameters(strategy):
    model, task = _conv4(torch.float64), _classification_task(dtype=torch.float64)
    fmodel, params = maml.functional(model)
    loss, _ = maml.reptile_loss(fmodel, params, task, inner_lr=0.1, steps=3, strategy=strategy,
                                bfmodel=batched_functional(model))
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    phis = [maml.adapt(fmodel, params, task.x_support[b], task.y_support[b], inner_lr=0.1, steps=3, first_order=True)
            for b in range(task.batch_size)]
    for n, p in params.items():
        expected = p - torch.stack([ph[n] for ph in phis]).mean(0)
        assert torch.allclose(grads[n], expected, atol=1e-10), n


def _plain_adapted(net, x, y, steps, inner_lr, optimizer="sgd", batch=None):
    """The definition, with nothing from metalib.maml: a copy of the network, torch.optim steps on (x, y)."""
    clone = copy.deepcopy(net)
    opt = (torch.optim.SGD(clone.parameters(), lr=inner_lr) if optimizer == "sgd"
           else torch.optim.Adam(clone.parameters(), lr=inner_lr, betas=(0.0, 0.999), eps=1e-8))
    for i in range(steps):
        lo = (i * batch) % len(x) if batch else 0
        xb, yb = (x[lo:lo + batch], y[lo:lo + batch]) if batch else (x, y)
        opt.zero_grad()
        F.cross_entropy(clone(xb), yb).backward()
        opt.step()
    return clone


@pytest.mark.parametrize("strategy,steps,optimizer", [("loop", 3, "sgd"), ("batched", 2, "sgd"), ("loop", 3, "adam")])
def test_fomaml_meta_gradient_is_the_mean_query_gradient_at_plainly_adapted_copies(strategy, steps, optimizer):
    """FOMAML's meta-gradient, as training computes it (the learner, backward per task), against its definition:
    per task, k optimiser steps on a deep copy of the network, then the query loss's gradient at the copy's
    weights, averaged over the meta-batch."""
    task = _classification_task(T=3, dtype=torch.float64)
    learner = MAMLLearner(_conv4(torch.float64), "fomaml", inner_lr=0.4 if optimizer == "sgd" else 0.01, steps=steps,
                          strategy=strategy, chunk=1, inner_optimizer=optimizer)
    learner.meta_backward(task)
    got = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    expected = 0
    for b in range(task.batch_size):
        clone = _plain_adapted(learner.model, task.x_support[b], task.y_support[b], steps, learner.inner_lr, optimizer)
        clone.zero_grad()
        F.cross_entropy(clone(task.x_query[b]), task.y_query[b]).backward()
        expected = expected + torch.cat([p.grad.flatten() for p in clone.parameters()]) / task.batch_size
    assert _rel(got, expected) < 1e-10
    second = MAMLLearner(_conv4(torch.float64), "maml", inner_lr=0.4, steps=steps, strategy=strategy, chunk=1)
    second.meta_backward(task)  # and the first-order gradient is not the second-order one
    if optimizer == "sgd":
        assert _rel(torch.cat([p.grad.flatten() for p in second.model.parameters()]), expected) > 1e-3


@pytest.mark.parametrize("optimizer,inner_batch,chunk", [("sgd", None, None), ("adam", 6, 1), ("adam", 6, None),
                                                         ("adam", None, 1)])
def test_reptile_update_is_the_plain_interpolation_towards_the_mean_adapted_weights(optimizer, inner_batch, chunk):
    """One outer SGD step of learning rate ε on the learner's Reptile gradient is θ + ε (mean_b φ_b − θ), the φ_b
    computed plainly (deep copies, torch.optim.SGD or Adam(β1 = 0), minibatches of the shuffled pooled support
    and query examples in the order of one torch.randperm per call: per task with chunk=1, per meta-batch with
    chunk=None)."""
    task = _classification_task(T=3, k=2, q=2, dtype=torch.float64)  # 12 examples per task when pooled
    eps, lr = 0.7, (0.1 if optimizer == "sgd" else 0.003)
    learner = MAMLLearner(_conv4(torch.float64), "reptile", inner_lr=lr, steps=3, strategy="loop", chunk=chunk,
                          inner_optimizer=optimizer, inner_batch=inner_batch)
    net0 = copy.deepcopy(learner.model)  # θ before the update
    theta = {n: p.detach().clone() for n, p in net0.named_parameters()}
    torch.manual_seed(5)
    learner.meta_backward(task)
    torch.optim.SGD(learner.parameters(), lr=eps).step()
    torch.manual_seed(5)
    phis = []
    for b in range(task.batch_size):
        x, y = task.x_support[b], task.y_support[b]
        if inner_batch:
            x, y = torch.cat([x, task.x_query[b]]), torch.cat([y, task.y_query[b]])
            perm = torch.randperm(len(x)) if chunk == 1 or b == 0 else perm
            x, y = x[perm], y[perm]
        clone = _plain_adapted(net0, x, y, 3, lr, optimizer, inner_batch)
        phis.append(dict(clone.named_parameters()))
    for n, p in learner.model.named_parameters():
        expected = theta[n] + eps * (torch.stack([ph[n].detach() for ph in phis]).mean(0) - theta[n])
        if n.startswith("features.") and n.endswith(".0.bias") and optimizer == "adam":
            continue  # BatchNorm cancels these biases: their gradient is float64 rounding, which Adam scales up to ±lr
        assert torch.allclose(p.detach(), expected, atol=1e-12, rtol=0), n


def test_learner_trains_every_method_without_touching_module_parameters_in_place():
    task = _classification_task(T=2)
    for method in ("maml", "fomaml", "anil", "metasgd", "reptile"):
        learner = MAMLLearner(_conv4(), method=method, inner_lr=0.4, steps=1, strategy="batched")
        before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
        loss, out = learner.meta_loss(task)
        loss.backward()
        assert out.shape == (2, 12, 3) and torch.isfinite(loss)
        assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())  # no hidden writes
        assert all(p.grad is not None for p in learner.parameters()), method
    meta_sgd = dict(MAMLLearner(_conv4(), method="metasgd").named_parameters())
    assert len(meta_sgd) == 2 * len(dict(_conv4().named_parameters()))  # a learned rate per parameter tensor


def _learner_meta_grad_by_hand(model, task, *, inner_lr, steps, names, second_order):
    """The meta-gradient written out with torch.autograd.grad, one task at a time (no metalib.maml):
    ``names`` are the adapted parameters; without ``second_order`` the inner gradients are constants."""
    params = dict(model.named_parameters())
    total = 0.0
    for b in range(task.batch_size):
        theta = dict(params)
        for _ in range(steps):
            support = F.cross_entropy(torch.func.functional_call(model, theta, (task.x_support[b],)), task.y_support[b])
            grads = torch.autograd.grad(support, [theta[n] for n in names], create_graph=second_order)
            theta = {**theta, **{n: theta[n] - inner_lr * g for n, g in zip(names, grads)}}
        total = total + F.cross_entropy(torch.func.functional_call(model, theta, (task.x_query[b],)), task.y_query[b])
    return torch.cat([g.flatten() for g in torch.autograd.grad(total / task.batch_size, list(params.values()))])


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_learner_methods_give_their_own_meta_gradient(strategy):
    """MAMLLearner's wiring: maml is second order over every parameter, fomaml first order, anil adapts the
    head only, pretrain takes no inner step. Each against a by-hand reference, and the references differ."""
    task = _classification_task(T=2, dtype=torch.float64)
    names = [n for n, _ in _conv4(torch.float64).named_parameters()]
    head = [n for n in names if n.startswith("head.")]
    cases = {"maml": dict(steps=2, names=names, second_order=True),
             "fomaml": dict(steps=2, names=names, second_order=False),
             "anil": dict(steps=2, names=head, second_order=True),
             "pretrain": dict(steps=0, names=names, second_order=True)}
    refs = {}
    for method, kw in cases.items():
        learner = MAMLLearner(_conv4(torch.float64), method=method, inner_lr=0.4, steps=2, strategy=strategy)
        loss, _ = learner.meta_loss(task)
        got = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(learner.model.parameters()))])
        refs[method] = _learner_meta_grad_by_hand(learner.model, task, inner_lr=0.4, **kw)
        assert _rel(got, refs[method]) < 1e-10, f"{method}: relative error {_rel(got, refs[method]):.2e} to its reference"
    for a, b in (("maml", "fomaml"), ("maml", "anil"), ("maml", "pretrain")):
        assert _rel(refs[a], refs[b]) > 1e-3, f"the {a} and {b} references should differ here"


def test_errors_say_what_to_do():
    model, task = _conv4(), _classification_task()
    fmodel, params = maml.functional(model)
    with pytest.raises(ValueError, match="strategy must be one of"):
        maml.meta_loss(fmodel, params, task, inner_lr=0.1, strategy="gpu")
    with pytest.raises(ValueError, match="needs bfmodel"):
        maml.meta_loss(fmodel, params, task, inner_lr=0.1, strategy="batched")
    with pytest.raises(ValueError, match="running_stats=False"):
        batched_functional(Conv4(hidden=8, n_classes=3))
    with pytest.raises(TypeError, match="strategy='loop'"):
        batched_functional(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not parameters"):
        maml.adapt(fmodel, params, task.x_support[0], task.y_support[0], inner_lr=0.1, names=["head.W"])
    with pytest.raises(ValueError, match="method must be one of"):
        MAMLLearner(model, method="imaml")
    with pytest.raises(ValueError, match="at least one inner step"):
        maml.reptile_loss(fmodel, params, task, inner_lr=0.1, steps=0)


def test_meta_backward_per_task_gives_the_whole_batch_gradient():
    task = _classification_task(T=3, dtype=torch.float64)
    grads = []
    for chunk in (None, 1, 2):
        learner = MAMLLearner(_conv4(torch.float64), inner_lr=0.4, steps=2, strategy="loop", chunk=chunk)
        loss, out = learner.meta_backward(task)
        assert not loss.requires_grad and out.shape == (3, 12, 3)
        grads.append(torch.cat([p.grad.flatten() for p in learner.parameters()]))
    learner = MAMLLearner(_conv4(torch.float64), inner_lr=0.4, steps=2, strategy="loop")
    ref, _ = learner.meta_loss(task)
    assert abs(float(ref.detach()) - float(loss)) < 1e-12
    assert all(_rel(g, grads[0]) < 1e-12 for g in grads[1:])


def test_train_maml_on_sinusoids_learns_and_the_checkpoint_round_trips(tmp_path):
    import dataclasses

    from metalib.maml_train import EXPERIMENTS, evaluate_maml, load_maml, task_sampler, train_maml
    from metalib.train import TrainConfig

    cfg = dataclasses.replace(EXPERIMENTS["maml_sine_k10"], hidden=20, val_episodes=50,
                              train=TrainConfig(steps=300, meta_batch=10, lr=3e-3, eval_every=150))
    learner, history = train_maml(cfg, device="cpu", progress=False, checkpoint=tmp_path / "sine.pt", command="test")
    first, last = history.train[0]["mse"], sum(r["mse"] for r in history.train[-20:]) / 20
    assert last < 0.7 * first, (first, last)
    assert [r["step"] for r in history.val] == [150, 300]
    loaded, meta = load_maml(tmp_path / "sine.pt")
    task = task_sampler(cfg, "test", device="cpu")(4)
    assert torch.allclose(loaded.predict(task, 3), learner.predict(task, 3))
    assert meta["command"] == "test" and meta["config"]["method"] == "maml"
    res = evaluate_maml(loaded, task_sampler(cfg, "test", device="cpu"), steps=(0, 1), episodes=30, batch_size=10)
    assert set(res) == {0, 1} and res[1][0] < res[0][0]  # one step on the support set lowers the query MSE
    with pytest.raises(ValueError, match="save_maml"):
        from metalib.checkpoint import save_checkpoint
        save_checkpoint(tmp_path / "other.pt", learner.state_dict(), kind="metric")
        load_maml(tmp_path / "other.pt")


def test_meta_train_refuses_a_detached_loss_with_no_gradients():
    from metalib.train import TrainConfig, meta_train

    net = torch.nn.Linear(2, 1)
    with pytest.raises(RuntimeError, match="does not require grad"):
        meta_train(net, lambda t: (torch.tensor(1.0), {}), lambda b: None, TrainConfig(steps=1, eval_every=0),
                   progress=False)


def _shipped_maml():
    from metalib.checkpoint import checkpoint_dir
    from metalib.maml_train import EXPERIMENTS
    return [n for n in EXPERIMENTS if (checkpoint_dir() / f"{n}.pt").is_file()]


@pytest.mark.parametrize("name", _shipped_maml())
def test_shipped_maml_checkpoints_load_on_cpu_with_their_command(name):
    """Every shipped learner (the GPU ones were saved by another torch) rebuilds on the CPU and adapts."""
    from metalib.maml_train import MAMLConfig, load_maml

    learner, meta = load_maml(name, "cpu")
    cfg = MAMLConfig.from_dict(meta["config"])
    assert f"--retrain {name}" in meta["command"] and meta["history"]["train"]
    g = torch.Generator().manual_seed(0)
    if cfg.dataset == "sinusoid":
        x = torch.rand(2, 10, 1, generator=g) * 10 - 5
        task = Task(x, torch.sin(x), x, torch.sin(x))
    else:
        n = cfg.n_way
        x = torch.rand(2, n, 1, 28, 28, generator=g)
        y = torch.arange(n).repeat(2, 1)
        task = Task(x, y, x, y)
    out = learner.predict(task, 1)
    assert out.shape[:2] == task.y_query.shape[:2] and torch.isfinite(out).all()
