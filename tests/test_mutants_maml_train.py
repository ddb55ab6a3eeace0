"""metalib.maml_train: behaviour that `make mutants MODULES=maml_train.py` showed untested by
tests/test_maml.py: the learner's defaults and the messages a caller reads, the "auto" strategy's
fallbacks, that the batched strategy runs the batched model, Meta-SGD's rate bookkeeping, Reptile with a
regression loss, ProtoMAML through the learner, `predict`'s default steps, the config's checks and quick
mode, `build_learner`, `task_sampler`'s seeds, `evaluate_maml`'s batching and its handling of diverged
tasks, what `train_maml` hands to `meta_train` and writes to the checkpoint, and the devices things are
put on (a "meta" tensor stands in for a GPU). References are deep copies of the network stepped by hand,
hand formulas, and the documented values.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import time

import pytest
import torch
import torch.nn.functional as F

from metalib import maml_train as mt
from metalib.maml_train import EXPERIMENTS, MAMLConfig, MAMLLearner, Score
from metalib.nets import MLP, Conv4
from metalib.tasks import Task
from metalib.train import TrainConfig

F64 = torch.float64


def _mlp(hidden=6) -> MLP:
    torch.manual_seed(0)
    return MLP(1, [hidden], 1).double()


def _conv(head=True, hidden=4) -> Conv4:
    torch.manual_seed(0)
    return Conv4(hidden=hidden, n_classes=3 if head else None, running_stats=False).double()


def _sine_task(T=3, k=4, q=5, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(T, k, 1, generator=g, dtype=F64) * 10 - 5
    xq = torch.rand(T, q, 1, generator=g, dtype=F64) * 10 - 5
    amp = torch.rand(T, 1, 1, generator=g, dtype=F64) * 4 + 1
    return Task(xs, amp * torch.sin(xs), xq, amp * torch.sin(xq))


def _full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ---------------------------------------------------------------- the learner

def test_learner_defaults():
    """method maml, α = 0.4, one step, strategy auto (the per-task loop on a CPU), cross-entropy, all tasks in
    one backward, SGD inner steps on the support set."""
    learner = MAMLLearner(_mlp())
    assert (learner.method, learner.inner_lr, learner.steps, learner._strategy, learner.strategy) == \
        ("maml", 0.4, 1, "auto", "loop")
    assert learner.loss_fn is F.cross_entropy and learner.chunk is None
    assert learner.inner_optimizer == "sgd" and learner.inner_batch is None
    assert not hasattr(learner, "lrs")


def test_learner_errors_say_what_to_do():
    mlp, conv, backbone = _mlp(), _conv(), _conv(head=False)
    cases = [
        (dict(model=mlp, method="imaml"), f"method must be one of {mt.METHODS}, got 'imaml'"),
        (dict(model=mlp, strategy="gpu"), "strategy must be one of ('loop', 'batched', 'vmap', 'auto'), got 'gpu'"),
        (dict(model=conv, strategy="vmap"),
         "strategy='vmap' gives a wrong second-order gradient through BatchNorm (torch.func's batching of its "
         "double backward; tests/test_maml.py measures it): use strategy='batched' (per-task statistics, exact) "
         "or 'loop'"),
        (dict(model=conv, method="protomaml"),
         "protomaml needs a backbone without head (Conv4(..., n_classes=None)) and strategy 'loop', 'batched' or "
         "'auto'"),
        (dict(model=Conv4(hidden=4, n_classes=None, running_stats=False, batch_norm=False), method="protomaml",
              strategy="vmap"),
         "protomaml needs a backbone without head (Conv4(..., n_classes=None)) and strategy 'loop', 'batched' or "
         "'auto'"),
        (dict(model=mlp, inner_optimizer="rmsprop"), "inner_optimizer must be one of ('sgd', 'adam'), got 'rmsprop'"),
        (dict(model=mlp, method="maml", inner_optimizer="adam"),
         "inner_optimizer='adam' is first order: use it with method 'fomaml' or 'reptile', not 'maml'"),
        (dict(model=mlp, method="fomaml", inner_batch=4),
         "inner_batch (minibatches of the pooled support and query sets) is Reptile's; method 'fomaml' adapts on "
         "the support set"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=_full(msg)):
            MAMLLearner(**kw)
    # and what is allowed
    assert MAMLLearner(mlp, strategy="vmap").strategy == "vmap"  # no BatchNorm
    assert MAMLLearner(backbone, "protomaml", strategy="batched").strategy == "batched"
    headless = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))  # any module without a head
    assert MAMLLearner(headless, "protomaml").method == "protomaml"
    for method in ("fomaml", "reptile"):
        assert MAMLLearner(mlp, method, inner_optimizer="adam").inner_optimizer == "adam"
    assert MAMLLearner(mlp, "reptile", inner_batch=4).inner_batch == 4


def test_auto_strategy_falls_back_to_the_loop(monkeypatch):
    """"auto": DEFAULT_STRATEGY of the parameters' device; "batched" only for models it supports (Conv4, MLP);
    an unknown device type gets the loop."""
    monkeypatch.setitem(mt.DEFAULT_STRATEGY, "cpu", "batched")
    assert MAMLLearner(_mlp()).strategy == "batched"
    other = torch.nn.Sequential(torch.nn.Linear(1, 1))
    assert MAMLLearner(other).strategy == "loop"
    assert MAMLLearner(_mlp(), strategy="vmap").strategy == "vmap"
    monkeypatch.delitem(mt.DEFAULT_STRATEGY, "cpu")
    assert MAMLLearner(_mlp()).strategy == "loop"


def test_meta_sgd_rates_start_at_alpha_and_come_back_under_their_names():
    learner = MAMLLearner(_mlp(), "metasgd", inner_lr=0.03)
    names = [n for n, _ in learner.model.named_parameters()]
    assert set(learner.lrs.keys()) == {n.replace(".", "__") for n in names}
    for n, p in learner.model.named_parameters():
        r = learner.lrs[n.replace(".", "__")]
        assert r.shape == p.shape and r.requires_grad and torch.equal(r.detach(), torch.full_like(p, 0.03))
    rates = learner.learned_rates()
    assert set(rates) == set(names) and not any(r.requires_grad for r in rates.values())
    first = names[0]
    with torch.no_grad():
        learner.lrs[first.replace(".", "__")].add_(1.0)  # the rates read back are the current ones
    torch.testing.assert_close(learner.learned_rates()[first], torch.full_like(rates[first], 1.03))
    with pytest.raises(ValueError, match=_full("only Meta-SGD learns its inner rates; method 'anil' uses α = 0.2")):
        MAMLLearner(_conv(), "anil", inner_lr=0.2).learned_rates()


def _sgd_adapted(net, x, y, steps, lr, loss_fn, lrs=None):
    """The definition: a deep copy of the network, plain gradient steps on (x, y), one rate per tensor."""
    clone = copy.deepcopy(net)
    for _ in range(steps):
        clone.zero_grad()
        loss_fn(clone(x), y).backward()
        with torch.no_grad():
            for n, p in clone.named_parameters():
                p -= (lr if lrs is None else lrs[n]) * p.grad
    return clone


def test_meta_sgd_learner_steps_each_parameter_with_its_own_rate():
    """Query MSE after one step with per-tensor rates, against a deep copy stepped by hand."""
    learner = MAMLLearner(_mlp(), "metasgd", inner_lr=0.05, steps=1, loss_fn=F.mse_loss, strategy="loop")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for r in learner.lrs.values():
            r.copy_(torch.rand(r.shape, generator=g, dtype=F64) * 0.05)
    task = _sine_task()
    loss, out = learner.meta_loss(task)
    rates = learner.learned_rates()
    want = 0.0
    for b in range(3):
        clone = _sgd_adapted(learner.model, task.x_support[b], task.y_support[b], 1, None, F.mse_loss, rates)
        with torch.no_grad():
            torch.testing.assert_close(out[b], clone(task.x_query[b]))
            want += F.mse_loss(clone(task.x_query[b]), task.y_query[b]).item() / 3
    assert abs(loss.item() - want) < 1e-12


def test_any_module_works_with_the_loop_strategy():
    """A module batched_functional does not know (neither Conv4 nor MLP) trains with strategy "loop": the
    meta-loss is the mean query MSE after one plain SGD step of a deep copy."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    learner = MAMLLearner(net, "maml", inner_lr=0.05, loss_fn=F.mse_loss, strategy="loop")
    task = _sine_task()
    loss, _ = learner.meta_loss(task)
    assert abs(loss.item() - _adapted_query_mse(net, task, 1, 0.05)) < 1e-12


def _counting_batched(monkeypatch) -> list:
    """Replace the learner's batched_functional by one that counts the calls of the batched model."""
    calls = []
    real = mt.batched_functional

    def counting(model):
        bf = real(model)

        def run(*args, **kw):
            calls.append(1)
            return bf(*args, **kw)
        return run
    monkeypatch.setattr(mt, "batched_functional", counting)
    return calls


@pytest.mark.parametrize("method", ["maml", "reptile", "protomaml"])
def test_the_batched_strategy_runs_the_batched_model_and_the_loop_does_not(monkeypatch, method):
    calls = _counting_batched(monkeypatch)
    if method == "protomaml":
        from test_protomaml import _task
        net, task = _conv(head=False), _task(T=2, n_way=3, k=1, q=2, seed=1)
        kw = {}
    else:
        net, task, kw = _mlp(), _sine_task(), {"loss_fn": F.mse_loss}
    MAMLLearner(net, method, inner_lr=0.01, strategy="loop", **kw).meta_loss(task)
    assert calls == []
    MAMLLearner(net, method, inner_lr=0.01, strategy="batched", **kw).meta_loss(task)
    assert len(calls) > 0


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_reptile_learner_adapts_with_its_own_loss_function(strategy):
    """Reptile on a regression learner: the meta-gradient θ − mean φ_b, φ_b from SGD steps on the support
    set's MSE (not the default cross-entropy) with the learner's rate and step count."""
    learner = MAMLLearner(_mlp(), "reptile", inner_lr=0.02, steps=2, loss_fn=F.mse_loss, strategy=strategy)
    task = _sine_task()
    loss, _ = learner.meta_loss(task)
    params = dict(learner.model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    phis = [dict(_sgd_adapted(learner.model, task.x_support[b], task.y_support[b], 2, 0.02, F.mse_loss)
                 .named_parameters()) for b in range(3)]
    for n, p in params.items():
        want = p.detach() - torch.stack([ph[n].detach() for ph in phis]).mean(0)
        torch.testing.assert_close(grads[n], want, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_protomaml_learner_gives_the_plain_meta_gradient(strategy):
    """The learner's ProtoMAML meta-loss and -gradient (α, steps, strategy passed on) against the plain
    computation of tests/test_protomaml.py (prototype head, then torch.autograd.grad steps)."""
    from test_protomaml import _grads, _plain_meta_loss, _task

    net = _conv(head=False)
    task = _task(T=2, n_way=3, k=1, q=2, seed=1)
    learner = MAMLLearner(net, "protomaml", inner_lr=0.1, steps=2, strategy=strategy)
    params = dict(net.named_parameters())
    loss, out = learner.meta_loss(task)
    ref = _plain_meta_loss(net, task, 0.1, 2)
    assert abs(loss.item() - ref.item()) < 1e-10 and out.shape == (2, 6, 3)
    got, want = _grads(loss, params), _grads(ref, params)
    assert float((got - want).norm() / want.norm()) < 1e-9
    other = _grads(_plain_meta_loss(net, task, 0.1, 1), params)  # the check can tell the step count
    assert float((other - want).norm() / want.norm()) > 1e-3


def test_predict_takes_the_training_steps_by_default_even_under_no_grad():
    """Query outputs after k plain SGD steps on a deep copy; k = the learner's steps unless given;
    ``learner(task)`` is ``predict(task)``; a caller's torch.no_grad() does not stop the inner steps."""
    learner = MAMLLearner(_mlp(), "maml", inner_lr=0.03, steps=2, loss_fn=F.mse_loss, strategy="loop")
    task = _sine_task()
    with torch.no_grad():
        out = learner.predict(task)
        fwd = learner(task)
        one = learner.predict(task, 1)
    for b in range(3):
        for steps, got in ((2, out), (2, fwd), (1, one)):
            clone = _sgd_adapted(learner.model, task.x_support[b], task.y_support[b], steps, 0.03, F.mse_loss)
            with torch.no_grad():
                torch.testing.assert_close(got[b], clone(task.x_query[b]), rtol=1e-10, atol=1e-12)
    assert not out.requires_grad and (out - one).abs().max() > 1e-4


def test_meta_backward_scales_each_chunk_by_its_share_of_the_tasks():
    """Chunks of 2 + 1 tasks: the accumulated gradient is the whole batch's mean, the returned loss its mean
    (by hand: per-task losses of a deep copy adapted plainly, averaged over the 3 tasks)."""
    task = _sine_task(T=3)
    learner = MAMLLearner(_mlp(), "fomaml", inner_lr=0.03, steps=1, loss_fn=F.mse_loss, strategy="loop", chunk=2)
    loss, out = learner.meta_backward(task)
    assert out.shape == (3, 5, 1) and not loss.requires_grad
    want_loss, want_grad = 0.0, None
    for b in range(3):
        clone = _sgd_adapted(learner.model, task.x_support[b], task.y_support[b], 1, 0.03, F.mse_loss)
        clone.zero_grad()
        q = F.mse_loss(clone(task.x_query[b]), task.y_query[b])
        q.backward()
        want_loss += q.item() / 3
        g = torch.cat([p.grad.flatten() for p in clone.parameters()]) / 3
        want_grad = g if want_grad is None else want_grad + g
    assert abs(loss.item() - want_loss) < 1e-12
    got = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    torch.testing.assert_close(got, want_grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the config

def test_config_errors_say_what_to_do():
    cases = [(dict(method="imaml"), f"method must be one of {mt.METHODS}, got 'imaml'"),
             (dict(dataset="mnist"), "dataset must be 'omniglot' or 'sinusoid', got 'mnist'"),
             (dict(method="protomaml", dataset="sinusoid"),
              "protomaml classifies (its head is made of class prototypes): use dataset='omniglot'"),
             (dict(outer="sgd"), "outer must be 'adam' or 'sgd-anneal', got 'sgd'")]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=_full(msg)):
            MAMLConfig(**kw)
    assert MAMLConfig("protomaml", "omniglot", outer="sgd-anneal").outer == "sgd-anneal"
    assert MAMLConfig("maml", "sinusoid").dataset == "sinusoid"


def test_quick_overrides_by_hand():
    """Quick mode: the train config's quick values, 4 validation tasks, width <= 16, <= 2 queries, and
    Reptile's minibatch = every pooled example (n_way * (k_shot + queries))."""
    rep = EXPERIMENTS["reptile_5w1s"]  # 14 queries, inner_batch 25, width 64
    q = rep.quick_overrides()
    assert q == {"train": TrainConfig(steps=6, meta_batch=4, lr=1.0, eval_every=3), "val_episodes": 4,
                 "hidden": 16, "n_query": 2, "inner_batch": 5 * (1 + 2)}
    small = MAMLConfig(n_way=3, k_shot=2, n_query=1, hidden=8, inner_batch=None,
                       train=TrainConfig(steps=2, meta_batch=2, lr=0.5, eval_every=0))
    assert small.quick_overrides() == {"train": TrainConfig(steps=2, meta_batch=2, lr=0.5, eval_every=0),
                                       "val_episodes": 4, "hidden": 8, "n_query": 1, "inner_batch": None}
    wide = MAMLConfig("reptile", n_way=3, k_shot=2, n_query=7, hidden=32, inner_batch=9)
    assert wide.quick_overrides()["inner_batch"] == 3 * (2 + 2)


def test_config_round_trips_through_a_plain_dict():
    cfg = EXPERIMENTS["reptile_5w1s"]
    assert MAMLConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_build_learner_follows_the_config_and_its_seed():
    """Sinusoid: MLP 1-h-h-1 with MSE; Omniglot: Conv-4 (no running statistics) with an n_way head, none for
    ProtoMAML; every learner setting from the config; the weights from torch.manual_seed(train.seed)."""
    cfg = MAMLConfig("metasgd", "sinusoid", inner_lr=0.02, inner_steps=3, hidden=7, strategy="batched", chunk=2,
                     train=TrainConfig(seed=5))
    learner = mt.build_learner(cfg)
    torch.manual_seed(5)
    ref = MLP(1, [7, 7], 1)
    assert [p.shape for p in learner.model.parameters()] == [p.shape for p in ref.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(learner.model.parameters(), ref.parameters()))
    assert (learner.method, learner.inner_lr, learner.steps, learner.strategy, learner.chunk) == \
        ("metasgd", 0.02, 3, "batched", 2)
    assert learner.loss_fn is F.mse_loss
    cfg = MAMLConfig("reptile", n_way=4, hidden=5, inner_lr=0.1, inner_steps=2, inner_optimizer="adam",
                     inner_batch=6, strategy="batched", chunk=3, train=TrainConfig(seed=2))
    learner = mt.build_learner(cfg)
    torch.manual_seed(2)
    ref = Conv4(hidden=5, n_classes=4, running_stats=False)
    assert all(torch.equal(a, b) for a, b in zip(learner.model.parameters(), ref.parameters()))
    assert learner.model.head is not None and learner.model.head.out_features == 4
    assert all(m.track_running_stats is False for m in learner.model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert (learner.method, learner.inner_lr, learner.steps, learner.strategy, learner.chunk) == \
        ("reptile", 0.1, 2, "batched", 3)  # not "auto" (the loop on a CPU)
    assert (learner.inner_optimizer, learner.inner_batch, learner.loss_fn) == ("adam", 6, F.cross_entropy)
    assert mt.build_learner(MAMLConfig("protomaml", hidden=5)).model.head is None
    rep = mt.build_learner(MAMLConfig("reptile", "sinusoid", hidden=5, inner_optimizer="adam", inner_batch=4))
    assert (rep.method, rep.inner_optimizer, rep.inner_batch, rep.loss_fn) == ("reptile", "adam", 4, F.mse_loss)


def test_sinusoid_task_sampler_seeds_each_part_apart():
    """Generator seed = seed + {train 0, val 1, test 2} * 7919; K support and Q query points per task."""
    from metalib.data import SinusoidTasks

    cfg = MAMLConfig("maml", "sinusoid", k_shot=3, n_query=4)
    for part, i in (("train", 0), ("val", 1), ("test", 2)):
        got = mt.task_sampler(cfg, part, device="cpu", seed=11)(2)
        want = SinusoidTasks().sample(2, 3, 4, generator=torch.Generator().manual_seed(11 + 7919 * i))
        for a, b in zip(got, want):
            assert torch.equal(a, b), part
    default = mt.task_sampler(cfg, "test", device="cpu")(2)  # seed 0
    want = SinusoidTasks().sample(2, 3, 4, generator=torch.Generator().manual_seed(2 * 7919))
    assert all(torch.equal(a, b) for a, b in zip(default, want))
    assert all(t.device.type == "meta" for t in mt.task_sampler(cfg, "train", device="meta")(2))  # stands in for a GPU


def test_omniglot_task_sampler_uses_the_given_data_split_and_seed(monkeypatch):
    """Episodes of the config's split and part, from the caller's data (nothing loaded), seeded by ``seed``."""
    from metalib import data as md
    from metalib.tasks import EpisodeSampler

    data = md.load_omniglot(download=False, progress=False)
    monkeypatch.setattr(md, "load_omniglot", lambda *a, **k: pytest.fail("the given data should be used"))
    cfg = MAMLConfig(n_way=3, k_shot=2, n_query=1)
    got = mt.task_sampler(cfg, "val", device="cpu", data=data, seed=5)(2)
    want = EpisodeSampler(md.omniglot_split(data, "vinyals", "val", device="cpu"), 3, 2, 1, seed=5).sample(2)
    assert got.x_support.shape == (2, 6, 1, 28, 28) and got.x_query.shape == (2, 3, 1, 28, 28)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    seen, real = [], md.omniglot_split

    def recording(d, split, part, *, device=None):  # a "meta" device stands in for a GPU (EpisodeSampler
        seen.append((d is data, split, part, str(device)))  # needs a real one, so the split stays on the CPU)
        return real(d, split, part, device="cpu")
    monkeypatch.setattr(md, "omniglot_split", recording)
    mt.task_sampler(cfg, "test", device="meta", data=data)
    assert seen == [(True, "vinyals", "test", "meta")]
    loads = []
    monkeypatch.setattr(md, "load_omniglot", lambda *a, **k: loads.append(1) or data)
    mt.task_sampler(cfg, "val", device="cpu")  # no data given: it loads Omniglot itself
    assert loads == [1]


# ---------------------------------------------------------------- evaluation

class _Stub:
    """A learner whose outputs are given: ``outputs[steps]`` is a function of the task."""

    def __init__(self, outputs, loss_fn):
        self.outputs, self.loss_fn, self.calls = outputs, loss_fn, []

    def predict(self, task, steps):
        self.calls.append((task.batch_size, steps))
        return self.outputs[steps](task)


def _sampler(sizes: list, q=3, classes=False, dim=1):
    """Tasks whose query targets count up: task j of the whole run has targets j (regression)."""
    state = {"n": 0}

    def sample(b):
        sizes.append(b)
        assert 0 < b and len(sizes) <= 100, f"evaluate_maml asked for batches {sizes[:5]}..."  # fail, not loop
        j = torch.arange(state["n"], state["n"] + b, dtype=F64)
        state["n"] += b
        if classes:
            y = (j[:, None] % 2).long().expand(b, q)
            return Task(torch.zeros(b, 1, 1), y, torch.zeros(b, q, 1), y)
        y = j[:, None, None].expand(b, q, dim)
        return Task(torch.zeros(b, 1, 1), y, torch.zeros(b, q, 1), y)
    return sample


def test_evaluate_defaults_600_tasks_in_batches_of_25_at_0_1_and_3_steps():
    sizes = []
    stub = _Stub({s: (lambda t: t.y_query + 1.0) for s in (0, 1, 3)}, F.mse_loss)
    res = mt.evaluate_maml(stub, _sampler(sizes))
    assert sizes == [25] * 24 and set(res) == {0, 1, 3}
    assert stub.calls[:3] == [(25, 0), (25, 1), (25, 3)]
    for s in (0, 1, 3):
        assert res[s] == Score(1.0, 0.0, 1.0, 0)


def test_evaluate_scores_mse_per_task_and_leaves_diverged_tasks_out():
    """Regression: per-task query MSE over every point and output coordinate; tasks 2 and 5 of 7 give inf and
    NaN: diverged = 2, the mean, its CI (1.96 s.e.) and the median over the other 5. Batches of 3: 3 + 3 + 1."""
    def out(task):
        y = task.y_query.clone()  # (b, 3, 2): task j's targets are j
        o = y.clone()
        o[..., 0] += y[..., 0] / 10  # task j's squared error: (j / 10)² on one coordinate, 0 on the other
        o[y == 2] = float("inf")
        o[y == 5] = float("nan")
        return o
    sizes = []
    res = mt.evaluate_maml(_Stub({2: out}, F.mse_loss), _sampler(sizes, dim=2), steps=(2,), episodes=7, batch_size=3)
    assert sizes == [3, 3, 1]
    mse = [(j / 10) ** 2 / 2 for j in (0, 1, 3, 4, 6)]
    mean = sum(mse) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in mse) / 4)
    s = res[2]
    assert s.diverged == 2 and abs(s.mean - mean) < 1e-12 and abs(s.median - (3 / 10) ** 2 / 2) < 1e-12
    assert abs(s.ci95 - 1.96 * sd / math.sqrt(5)) < 1e-12


def test_evaluate_scores_accuracy_for_classifiers_and_nan_when_every_task_diverged():
    """Classification (any loss but MSE): per-task query accuracy from the logits. All-NaN regression: NaN
    mean, CI and median, every task counted as diverged."""
    def logits(task):  # right on even tasks, wrong on odd ones
        return F.one_hot(torch.zeros_like(task.y_query), 2).double()
    res = mt.evaluate_maml(_Stub({1: logits}, F.cross_entropy), _sampler([], classes=True), steps=(1,),
                           episodes=4, batch_size=4)
    # accuracies [1, 0, 1, 0]: torch's median is the lower of the two middle values
    assert res[1].mean == 0.5 and res[1].diverged == 0 and res[1].median == 0.0
    nan = mt.evaluate_maml(_Stub({0: lambda t: t.y_query * float("nan")}, F.mse_loss), _sampler([]), steps=(0,),
                           episodes=3, batch_size=2)
    assert nan[0].diverged == 3 and all(math.isnan(v) for v in (nan[0].mean, nan[0].ci95, nan[0].median))


# ---------------------------------------------------------------- training and checkpoints

class _Captured:
    """Stands in for metalib.train.meta_train: records what train_maml hands it."""

    def __init__(self):
        self.args = None

    def __call__(self, model, step_loss, sample, cfg, **kw):
        self.args = dict(model=model, step_loss=step_loss, sample=sample, cfg=cfg, **kw)
        from metalib.train import History
        return History(train=[{"step": 1, "loss": 0.5}], val=[], stopped="finished")


def _adapted_query_mse(net, task, steps, lr):
    """Mean over tasks of the query MSE after ``steps`` plain SGD steps on a deep copy."""
    total = 0.0
    for b in range(task.batch_size):
        clone = _sgd_adapted(net, task.x_support[b], task.y_support[b], steps, lr, F.mse_loss)
        with torch.no_grad():
            total += F.mse_loss(clone(task.x_query[b]), task.y_query[b]).item()
    return total / task.batch_size


def test_train_maml_on_sinusoids_wires_the_loop_validation_log_and_checkpoint(monkeypatch, tmp_path):
    """Regression: the training tasks are the config's own sampler (seed = train.seed), the step's metric is
    its MSE, validation is the query MSE after eval_steps on fixed tasks (seed 0, part "val") and is logged;
    Adam (meta_train's default) with a progress bar; the checkpoint holds the device, time, strategy and
    the caller's metadata."""
    from metalib.data import SinusoidTasks

    fake = _Captured()
    monkeypatch.setattr(mt, "meta_train", fake)
    cfg = MAMLConfig("maml", "sinusoid", k_shot=4, n_query=5, inner_lr=0.02, eval_steps=2, hidden=6,
                     strategy="batched", val_episodes=30, train=TrainConfig(steps=7, meta_batch=2, lr=1e-3, seed=4))
    lines = []
    t0 = time.perf_counter()
    learner, history = mt.train_maml(cfg, log=lines.append, checkpoint=tmp_path / "s.pt", command="by test")
    took = time.perf_counter() - t0
    a = fake.args
    assert a["model"] is learner and a["cfg"] is cfg.train and history.train == [{"step": 1, "loss": 0.5}]
    assert a["progress"] is True and a["desc"] == "maml sinusoid"
    assert a["optimizer"] is None and a["scheduler"] is None
    want = SinusoidTasks().sample(2, 4, 5, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a["sample"](2), want))
    net0 = copy.deepcopy(learner.model)  # θ before any step
    task = _sine_task(T=2, k=4, q=5)
    loss, metrics = a["step_loss"](Task(*(t.float() for t in task)))
    ref = _adapted_query_mse(net0.double(), task, 1, 0.02)
    assert abs(loss.item() - ref) < 1e-4 and set(metrics) == {"mse"} and metrics["mse"].item() == loss.item()
    assert all(p.grad is not None for p in learner.model.parameters())  # meta_backward accumulated gradients
    val = SinusoidTasks().sample(30, 4, 5, generator=torch.Generator().manual_seed(7919))  # one batch of 30
    got = a["validate"]()
    took_val = time.perf_counter() - t0
    want_mse = _adapted_query_mse(net0.double(), Task(*(t.double() for t in val)), 2, 0.02)
    assert set(got) == {"mse"} and abs(got["mse"] - want_mse) < 1e-4
    m = re.fullmatch(rf"\d\d:\d\d:\d\d (\d+) s: validation MSE after 2 steps {got['mse']:.4f}", lines[0])
    assert len(lines) == 1 and m, lines
    assert int(m.group(1)) <= took_val + 1  # seconds since training started
    loaded, meta = mt.load_maml(tmp_path / "s.pt")
    assert meta["device"] == "cpu" and meta["strategy"] == "batched" and meta["command"] == "by test"
    assert isinstance(meta["train_seconds"], float) and 0 <= meta["train_seconds"] <= took
    assert meta["history"] == {"train": [{"step": 1, "loss": 0.5}], "val": [], "stopped": "finished"}
    assert MAMLConfig.from_dict(meta["config"]) == cfg


def _class_task(T=2, n_way=3, q=2, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(T, n_way, 1, 28, 28, generator=g)
    xq = torch.rand(T, n_way * q, 1, 28, 28, generator=g)
    return Task(xs, torch.arange(n_way).expand(T, -1), xq, torch.arange(n_way).repeat(q).expand(T, -1))


def test_train_maml_classifies_with_a_given_sampler_and_anneals_reptiles_step(monkeypatch):
    """Classification: the step's metric is the query accuracy of the meta-batch, validation the accuracy
    after eval_steps (logged as accuracy) on the config's fixed "val" tasks (seed 0, the caller's data);
    outer "sgd-anneal": SGD at train.lr over the learner's parameters, its rate scaled by 1 - i / steps."""
    fake = _Captured()
    monkeypatch.setattr(mt, "meta_train", fake)
    calls = []
    val_task = _class_task(T=4, seed=3)

    def fake_sampler(cfg, part, *, device=None, data=None, seed=0):
        calls.append((part, str(device), data, seed))
        return lambda b: val_task.select(slice(0, b))
    monkeypatch.setattr(mt, "task_sampler", fake_sampler)
    mine = lambda b: _class_task(T=b)  # noqa: E731
    cfg = MAMLConfig("reptile", n_way=3, hidden=4, inner_lr=0.1, inner_steps=1, eval_steps=1, outer="sgd-anneal",
                     val_episodes=4, train=TrainConfig(steps=8, meta_batch=2, lr=0.7, seed=1))
    lines = []
    learner, _ = mt.train_maml(cfg, data="DATA", sample=mine, progress=False, log=lines.append)
    a = fake.args
    assert calls == [("val", "cpu", "DATA", 0)]  # no training sampler built: the caller's is used
    assert a["sample"] is mine and a["progress"] is False and a["desc"] == "reptile omniglot"
    opt, sched = a["optimizer"], a["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["initial_lr"] == 0.7
    assert [p for g in opt.param_groups for p in g["params"]] == list(learner.parameters())
    assert [sched.lr_lambdas[0](i) for i in (0, 2, 8)] == [1.0, 0.75, 0.0]
    task = _class_task(T=2, seed=5)
    net0 = copy.deepcopy(learner.model)
    _, metrics = a["step_loss"](task)
    acc = 0.0  # Reptile's query outputs are those of the adapted weights φ_b
    for b in range(2):
        clone = _sgd_adapted(net0, task.x_support[b], task.y_support[b], 1, 0.1, F.cross_entropy)
        with torch.no_grad():
            acc += (clone(task.x_query[b]).argmax(-1) == task.y_query[b]).float().mean().item() / 2
    assert set(metrics) == {"acc"} and abs(metrics["acc"].item() - acc) < 1e-6
    got = a["validate"]()
    want = 0.0
    for b in range(4):
        clone = _sgd_adapted(net0, val_task.x_support[b], val_task.y_support[b], 1, 0.1, F.cross_entropy)
        with torch.no_grad():
            want += (clone(val_task.x_query[b]).argmax(-1) == val_task.y_query[b]).float().mean().item() / 4
    assert set(got) == {"acc"} and abs(got["acc"] - want) < 1e-6
    assert re.fullmatch(rf"\d\d:\d\d:\d\d \d+ s: validation accuracy after 1 steps {want:.4f}", lines[0]), lines


def test_train_maml_builds_its_samplers_and_learner_on_the_requested_device(monkeypatch):
    """A "meta" device stands in for a GPU: the learner is moved there, and the training tasks (seed = train.seed)
    and the fixed validation tasks (seed 0) are drawn there, from the caller's data."""
    fake = _Captured()
    monkeypatch.setattr(mt, "meta_train", fake)
    calls = []

    def fake_sampler(cfg, part, *, device=None, data=None, seed=0):
        calls.append((part, str(device), data, seed))
        return lambda b: None
    monkeypatch.setattr(mt, "task_sampler", fake_sampler)
    cfg = MAMLConfig("maml", "sinusoid", hidden=4, val_episodes=2, train=TrainConfig(steps=1, meta_batch=1, seed=4))
    learner, _ = mt.train_maml(cfg, device="meta", data="DATA", progress=False)
    assert all(p.device.type == "meta" for p in learner.parameters())
    assert calls == [("train", "meta", "DATA", 4), ("val", "meta", "DATA", 0)]


def test_train_maml_without_validation_episodes_does_not_validate(monkeypatch):
    fake = _Captured()
    monkeypatch.setattr(mt, "meta_train", fake)
    monkeypatch.setattr(mt, "task_sampler", lambda *a, **k: pytest.fail("no sampler should be built"))
    cfg = MAMLConfig("maml", "sinusoid", hidden=4, val_episodes=0, train=TrainConfig(steps=1, meta_batch=1))
    mt.train_maml(cfg, sample=lambda b: None)
    assert fake.args["validate"] is None


def test_load_maml_restores_the_learner_on_the_cpu_by_default_and_refuses_other_checkpoints(tmp_path):
    from metalib.checkpoint import save_checkpoint

    cfg = MAMLConfig("metasgd", "sinusoid", hidden=5, inner_lr=0.03, train=TrainConfig(seed=3))
    learner = mt.build_learner(cfg)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.25)  # not what build_learner gives
    path = mt.save_maml(learner, cfg, tmp_path / "m.pt", note="n")
    loaded, meta = mt.load_maml(path)
    assert meta["kind"] == "maml" and meta["note"] == "n" and MAMLConfig.from_dict(meta["config"]) == cfg
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    for (n, p), q in zip(learner.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), n
    on_meta, _ = mt.load_maml(path, "meta")  # "meta" stands in for a GPU
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    other = save_checkpoint(tmp_path / "o.pt", learner.state_dict(), kind="metric", config={})
    msg = (f"{other} was not written by metalib.maml_train.save_maml (no maml config in its metadata); "
           f"load it with the function that saved it")
    with pytest.raises(ValueError, match=_full(msg)):
        mt.load_maml(other)
