"""metalib.metric_train: behaviour that `make mutants MODULES=metric_train.py` showed untested by
tests/test_metric.py: the configuration's error messages and quick mode, how `train_metric` wires its
sampler, loss, validation, schedule, clock and checkpoint into `meta_train`, the test protocol of
`test_sampler` and the defaults of `evaluate_model`.

References are values written out by hand (the documented protocol: 600 episodes, seed 1234, ...), a
plain cross-entropy loop, and fakes that record what the library is called with. Nothing loads Omniglot:
the data functions are replaced by tiny random splits.
"""
from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

import metalib.metric_train as mt
from metalib.data import ClassSplit
from metalib.evaluate import Accuracy
from metalib.matching import MatchingNet
from metalib.metric_train import MetricConfig
from metalib.protonet import ProtoNet
from metalib.tasks import EpisodeSampler
from metalib.train import History, TrainConfig


def _split(n_classes=4, per_class=6, seed=0, name="tiny", size=28):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n_classes, per_class, size, size, generator=g) * 255).to(torch.uint8)
    return ClassSplit(images=images, class_names=tuple(f"c{i}" for i in range(n_classes)),
                      char_index=torch.arange(n_classes) + 10 * seed, name=name)


def _cfg(**kw):
    base = dict(method="protonet", n_way=3, k_shot=1, n_query=2, hidden=4, val_ways=3, val_episodes=7,
                train=TrainConfig(steps=8, meta_batch=2, lr=0.02, eval_every=4, seed=5))
    return MetricConfig(**(base | kw))


def _exactly(message: str) -> str:
    """A pattern for pytest.raises that matches the whole message, not a part of it."""
    return "^" + re.escape(message) + "$"


class _Clock:
    """Stands in for the `time` module of metric_train: perf_counter returns the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def perf_counter(self):
        return self.values.pop(0)

    def strftime(self, fmt):
        self.format = fmt
        return "12:34:56"


@pytest.fixture
def captured(monkeypatch):
    """train_metric with meta_train replaced by a recorder (returns an empty History)."""
    seen = {}

    def fake(model, step_loss, sample, cfg, **kw):
        seen.update(model=model, step_loss=step_loss, sample=sample, cfg=cfg, training=model.training, **kw)
        return History(train=[{"step": 0, "loss": 1.5}])

    monkeypatch.setattr(mt, "meta_train", fake)
    return seen


# ----------------------------------------------------------------------------- MetricConfig

def test_config_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match=_exactly("method must be one of ('protonet', 'matching'), got 'maml'")):
        MetricConfig("maml")
    with pytest.raises(ValueError, match=_exactly("protonet supports similarity ('euclidean', 'dot'), got 'cosine'")):
        MetricConfig("protonet", similarity="cosine")
    with pytest.raises(ValueError, match=_exactly("matching supports similarity ('cosine', 'dot'), got 'euclidean'")):
        MetricConfig("matching", similarity="euclidean")
    with pytest.raises(ValueError, match=_exactly("fce (full-context embeddings) belongs to Matching Networks; "
                                                   "use method='matching'")):
        MetricConfig("protonet", fce=True)
    with pytest.raises(ValueError, match=_exactly("train_part must be 'train' or 'trainval', got 'test'")):
        MetricConfig(train_part="test")
    with pytest.raises(ValueError, match=_exactly("final_pool=False is implemented for method='protonet' only")):
        MetricConfig("matching", final_pool=False)


def test_config_accepts_each_methods_own_choices_and_defaults_to_the_papers():
    assert MetricConfig("protonet").similarity == "euclidean"   # Snell et al.
    assert MetricConfig("matching").similarity == "cosine"      # Vinyals et al.
    assert MetricConfig("protonet", similarity="dot").similarity == "dot"
    assert MetricConfig("matching", similarity="dot").similarity == "dot"
    assert MetricConfig("matching", fce=True).fce is True
    assert MetricConfig(train_part="trainval").train_part == "trainval"
    assert MetricConfig("protonet", final_pool=False).final_pool is False


def test_quick_overrides_cap_the_episode_sizes_and_keep_smaller_ones():
    big = MetricConfig(n_way=20, n_query=5, val_ways=20, val_episodes=100,
                       train=TrainConfig(steps=6000, meta_batch=10, lr=1e-3, eval_every=500))
    q = big.quick_overrides()
    assert set(q) == {"train", "n_way", "n_query", "val_episodes", "val_ways"}
    assert (q["n_way"], q["n_query"], q["val_episodes"], q["val_ways"]) == (5, 2, 4, 5)
    assert q["train"] == TrainConfig(steps=6, meta_batch=4, lr=1e-3, eval_every=3)
    small = MetricConfig(n_way=3, n_query=1, val_ways=2, val_episodes=100)
    q = small.quick_overrides()
    assert (q["n_way"], q["n_query"], q["val_episodes"], q["val_ways"]) == (3, 1, 4, 2)


def test_from_dict_rebuilds_the_config_without_changing_its_argument():
    cfg = MetricConfig("matching", 7, 2, 3, similarity="dot", hidden=16, fce=True, train=TrainConfig(steps=9, seed=4))
    d = dataclasses.asdict(cfg)
    assert MetricConfig.from_dict(d) == cfg
    assert d["train"] == dataclasses.asdict(cfg.train)  # still the plain dict a checkpoint holds


# ----------------------------------------------------------------------------- build_model

@pytest.mark.parametrize("seed", [0, 7])
def test_build_model_is_seeded_and_passes_every_protonet_option(seed):
    cfg = MetricConfig("protonet", similarity="dot", hidden=6, separate_support=True, final_pool=False,
                       train=TrainConfig(seed=seed))
    torch.manual_seed(seed)
    want = ProtoNet("dot", hidden=6, separate_support=True, final_pool=False)
    torch.manual_seed(seed + 100)  # build_model must reseed itself
    got = mt.build_model(cfg)
    assert type(got) is ProtoNet and got.similarity == "dot" and got.g is not None
    assert got.state_dict().keys() == want.state_dict().keys()
    for k, v in want.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, rtol=0, atol=0)
    assert got.embed(torch.rand(2, 1, 28, 28)).shape == (2, 6 * 9)  # final map kept: 3x3


def test_build_model_passes_every_matching_option():
    cfg = MetricConfig("matching", similarity="dot", hidden=5, separate_support=True, fce=True,
                       train=TrainConfig(seed=3))
    torch.manual_seed(3)
    want = MatchingNet("dot", hidden=5, separate_support=True, fce=True)
    got = mt.build_model(cfg)
    assert type(got) is MatchingNet and got.kernel == "dot" and got.fce is not None and got.g is not None
    for k, v in want.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, rtol=0, atol=0)
    plain = mt.build_model(MetricConfig("matching", hidden=5))
    assert plain.kernel == "cosine" and plain.fce is None and plain.g is None
    proto = mt.build_model(MetricConfig("protonet", hidden=5))
    assert proto.similarity == "euclidean" and proto.g is None
    assert proto.embed(torch.rand(2, 1, 28, 28)).shape == (2, 5)


# ----------------------------------------------------------------------------- _splits

def test_splits_take_the_configs_parts_rotations_and_device(monkeypatch):
    import metalib.data as data_mod
    calls = []

    def fake_split(data, split, part, **kw):
        calls.append((split, part, kw))
        return _split(3, seed={"trainval": 2, "train": 1, "val": 3}[part])

    monkeypatch.setattr(data_mod, "omniglot_split", fake_split)
    data = type("D", (), {"images": torch.zeros(40, 20, 28, 28), "alphabet": torch.arange(40) * 2})()
    cfg = MetricConfig("protonet", split="lake", rotations=True, train_part="trainval")
    train, val, groups = mt._splits(cfg, "cpu", data=data)
    assert calls == [("lake", "trainval", {"rotations": True, "device": "cpu"}),
                     ("lake", "val", {"rotations": True, "device": "cpu"})]
    assert train.name == "tiny" and torch.equal(train.char_index, torch.arange(3) + 20)
    assert torch.equal(val.char_index, torch.arange(3) + 30)
    assert torch.equal(groups, 2 * (torch.arange(3) + 20))  # the alphabet of each *training* class


def test_splits_load_omniglot_at_the_configs_size_and_say_how_to_fix_a_mismatch(monkeypatch):
    import metalib.data as data_mod
    sizes = []
    monkeypatch.setattr(data_mod, "load_omniglot", lambda size: sizes.append(size) or
                        type("D", (), {"images": torch.zeros(1, 20, 28, 28)})())
    with pytest.raises(ValueError, match=_exactly("the config wants 32x32 images but the data has 28: "
                                                   "load it with load_omniglot(size=32)")):
        mt._splits(MetricConfig(image_size=32), "cpu")
    assert sizes == [32]


# ----------------------------------------------------------------------------- train_metric

def test_train_metric_hands_meta_train_a_seeded_sampler_adam_and_its_progress(captured):
    train, val = _split(5), _split(4, seed=1)
    cfg = _cfg()
    model, history = mt.train_metric(cfg, train, val, progress=False)
    s = captured
    assert s["model"] is model and s["cfg"] is cfg.train and history.train == [{"step": 0, "loss": 1.5}]
    assert s["training"] is True and model.training is False  # trained in train mode, returned in eval mode
    sampler = s["sample"].__self__
    assert isinstance(sampler, EpisodeSampler) and s["sample"].__func__ is EpisodeSampler.sample
    assert sampler.split is train and (sampler.n_way, sampler.k_shot, sampler.n_query) == (3, 1, 2)
    assert sampler.groups is None and sampler.generator.initial_seed() == 5
    opt = s["optimizer"]
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 0.02
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]
    assert s["progress"] is False and s["desc"] == "protonet 3-way 1-shot"
    mt.train_metric(dataclasses.replace(cfg, method="matching", similarity="cosine", n_way=4, k_shot=2),
                    train, val)
    assert captured["progress"] is True and captured["desc"] == "matching 4-way 2-shot"


def test_train_metric_step_loss_is_the_mean_cross_entropy_over_every_query(captured):
    train = _split(5)
    mt.train_metric(_cfg(), train, None, progress=False)
    model, step_loss = captured["model"], captured["step_loss"]
    task = EpisodeSampler(train, 3, 1, 2, seed=1).sample(2)
    loss, metrics = step_loss(task)
    logits = model(task)  # (B, M, N)
    terms, hits = [], []
    for b in range(logits.shape[0]):
        for m in range(logits.shape[1]):
            row, y = logits[b, m].double(), int(task.y_query[b, m])
            terms.append(torch.logsumexp(row, 0) - row[y])
            hits.append(float(int(row.argmax()) == y))
    torch.testing.assert_close(loss.double(), torch.stack(terms).mean(), atol=1e-6, rtol=1e-6)
    assert loss.requires_grad
    torch.testing.assert_close(torch.as_tensor(metrics["acc"]).double(), torch.tensor(sum(hits) / len(hits),
                                                                                       dtype=torch.float64))


def test_train_metric_validates_on_1_shot_episodes_of_the_val_split(captured, monkeypatch):
    calls = []

    def fake_eval(model, sampler, **kw):
        calls.append((model, sampler, kw, torch.is_grad_enabled()))
        return Accuracy(0.4567, 0.01, kw["episodes"])

    monkeypatch.setattr(mt, "evaluate_accuracy", fake_eval)
    clock = _Clock(100.0, 142.4, 0.0)
    monkeypatch.setattr(mt, "time", clock)
    train, val = _split(5), _split(4, seed=1)
    lines = []
    model, _ = mt.train_metric(_cfg(val_ways=5), train, val, progress=False, log=lines.append)
    assert captured["validate"]() == {"acc": 0.4567}
    (m, sampler, kw, grad), = calls
    assert m is model and grad is False
    assert kw == {"episodes": 7, "batch_size": 10, "seed": 0, "progress": False}
    assert sampler.split is val and (sampler.n_way, sampler.k_shot, sampler.n_query) == (4, 1, 5)  # 5 ways capped at 4
    assert lines == ["12:34:56 42 s: validation 4-way 1-shot accuracy 45.7%"] and clock.format == "%H:%M:%S"
    mt.train_metric(_cfg(val_ways=2), train, val, progress=False)  # no log: nothing printed
    captured["validate"]()
    assert calls[-1][1].n_way == 2 and lines == ["12:34:56 42 s: validation 4-way 1-shot accuracy 45.7%"]


def test_train_metric_validates_only_with_a_val_split_and_episodes(captured):
    train, val = _split(5), _split(4, seed=1)
    mt.train_metric(_cfg(), train, None, progress=False)
    assert captured["validate"] is None
    mt.train_metric(_cfg(val_episodes=0), train, val, progress=False)
    assert captured["validate"] is None


def test_train_metric_cosine_schedule_reaches_zero_and_stays_there(captured):
    train = _split(5)
    mt.train_metric(_cfg(), train, None, progress=False)
    sched = captured["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR) and sched.optimizer is captured["optimizer"]
    f = sched.lr_lambdas[0]
    for s, want in [(0, 1.0), (2, 0.5 * (1 + math.cos(math.pi / 4))), (4, 0.5), (8, 0.0), (12, 0.0), (40, 0.0)]:
        assert f(s) == pytest.approx(want, abs=1e-12), s
    mt.train_metric(_cfg(cosine_decay=False), train, None, progress=False)
    assert captured["scheduler"] is None
    mt.train_metric(_cfg(train=TrainConfig(steps=0, meta_batch=1, eval_every=0)), train, None, progress=False)
    assert captured["scheduler"] is None  # no steps: nothing to anneal (and no division by zero)


def test_train_metric_distorts_with_a_generator_seeded_one_past_the_training_seed(captured, monkeypatch):
    import metalib.augment as augment
    seeds = []

    def spy(task, generator, *a, **kw):
        seeds.append(generator.initial_seed())
        return task

    monkeypatch.setattr(augment, "augment_task", spy)
    train = _split(5)
    mt.train_metric(_cfg(augment=True), train, None, progress=False)
    task = EpisodeSampler(train, 3, 1, 2, seed=1).sample(1)
    captured["step_loss"](task)
    captured["step_loss"](task)
    assert seeds == [6, 6]  # one generator, train.seed + 1, drawn from across steps
    mt.train_metric(_cfg(augment=False), train, None, progress=False)
    captured["step_loss"](task)
    assert seeds == [6, 6]


def test_train_metric_loads_the_configs_split_on_the_default_device(captured, monkeypatch):
    import metalib.device as device_mod
    train, val, groups = _split(6), _split(4, seed=1), torch.tensor([0, 0, 0, 1, 1, 1])
    asked = []
    monkeypatch.setattr(mt, "_splits", lambda cfg, device: asked.append(device) or (train, val, groups))
    monkeypatch.setattr(device_mod, "get_device", lambda: "default-device")
    mt.train_metric(_cfg(within_alphabet=True), progress=False)
    sampler = captured["sample"].__self__
    assert sampler.split is train and torch.equal(sampler.groups, groups)
    mt.train_metric(_cfg(), progress=False, device="cpu")
    assert captured["sample"].__self__.groups is None  # alphabets only for within-alphabet training
    assert asked == ["default-device", "cpu"]
    with pytest.raises(ValueError, match=_exactly("within_alphabet training needs the alphabets of the classes: "
                                                   "let train_metric load the split (train_split=None)")):
        mt.train_metric(_cfg(within_alphabet=True), train, val, progress=False)


def test_train_metric_checkpoint_holds_the_history_device_time_and_meta(captured, monkeypatch, tmp_path):
    monkeypatch.setattr(mt, "time", _Clock(10.0, 13.25))
    model, _ = mt.train_metric(_cfg(), _split(5), None, progress=False, checkpoint=tmp_path / "m.pt", command="cmd")
    loaded, meta = mt.load_metric(tmp_path / "m.pt")
    assert meta["kind"] == "metric" and meta["command"] == "cmd" and meta["device"] == "cpu"
    assert meta["train_seconds"] == 3.25
    assert meta["history"] == {"train": [{"step": 0, "loss": 1.5}], "val": [], "stopped": "finished"}
    assert MetricConfig.from_dict(meta["config"]) == _cfg()
    assert loaded.training is False
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


# ----------------------------------------------------------------------------- test_sampler, evaluate_model

@pytest.fixture
def test_split(monkeypatch):
    """metalib.data's loaders replaced: the "test" part is 5 classes of 20 drawings, alphabets 0 0 1 1 1."""
    import metalib.data as data_mod
    import metalib.device as device_mod
    calls = {"split": [], "load": []}
    test = ClassSplit(images=torch.zeros(5, 20, 28, 28, dtype=torch.uint8), class_names=tuple("abcde"),
                      char_index=torch.tensor([4, 0, 1, 2, 3]), name="test")
    data = type("D", (), {"alphabet": torch.tensor([0, 1, 1, 1, 0])})()

    def fake_split(d, split, part, **kw):
        calls["split"].append((d, split, part, kw))
        return test

    monkeypatch.setattr(data_mod, "omniglot_split", fake_split)
    monkeypatch.setattr(data_mod, "load_omniglot", lambda size: calls["load"].append(size) or data)
    monkeypatch.setattr(device_mod, "get_device", lambda: "default-device")
    return data, test, calls


def test_test_sampler_follows_the_papers_protocol(test_split):
    data, test, calls = test_split
    s = mt.test_sampler(5, 1)
    assert calls["load"] == [28] and calls["split"] == [(data, "vinyals", "test", {"device": "default-device"})]
    assert s.split is test and (s.n_way, s.k_shot, s.n_query) == (5, 1, 15) and s.groups is None
    s = mt.test_sampler(3, 10, split="lake", device="cpu", data=data, image_size=56)
    assert calls["load"] == [28] and calls["split"][-1] == (data, "lake", "test", {"device": "cpu"})
    assert (s.n_way, s.k_shot, s.n_query) == (3, 10, 10)  # 20 drawings - 10 shots leave 10 queries
    s = mt.test_sampler(2, 5, n_query=3, data=data)
    assert (s.n_way, s.k_shot, s.n_query) == (2, 5, 3)
    mt.test_sampler(2, 1, image_size=56)
    assert calls["load"] == [28, 56]


def test_test_sampler_within_alphabet_asks_one_query_and_groups_by_alphabet(test_split):
    data, _, _ = test_split
    s = mt.test_sampler(2, 1, within_alphabet=True, data=data)
    assert s.n_query == 1 and torch.equal(s.groups, torch.tensor([0, 0, 1, 1, 1]))  # alphabet[char_index]
    assert mt.test_sampler(2, 1, within_alphabet=True, n_query=4, data=data).n_query == 4


def test_evaluate_model_defaults_to_600_seeded_episodes_in_eval_mode_without_gradients(monkeypatch):
    calls = []

    def fake_eval(model, sampler, **kw):
        calls.append((model, sampler, kw, torch.is_grad_enabled(), model.training))
        return Accuracy(0.5, 0.1, kw["episodes"])

    monkeypatch.setattr(mt, "evaluate_accuracy", fake_eval)
    model = torch.nn.Linear(2, 2).train()
    sampler = EpisodeSampler(_split(5), 4, 2, 1)
    assert mt.evaluate_model(model, sampler) == Accuracy(0.5, 0.1, 600)
    assert calls[0] == (model, sampler, {"episodes": 600, "batch_size": 20, "seed": 1234, "progress": True,
                                         "desc": "4-way 2-shot"}, False, False)
    mt.evaluate_model(model, sampler, episodes=30, seed=2, batch_size=5, progress=False)
    assert calls[1][2] == {"episodes": 30, "batch_size": 5, "seed": 2, "progress": False, "desc": "4-way 2-shot"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: everything must follow the split's device")
def test_training_distortion_alphabets_and_loading_follow_the_device(captured, monkeypatch, tmp_path):
    import metalib.augment as augment
    import metalib.data as data_mod
    devices = []
    monkeypatch.setattr(augment, "augment_task", lambda task, generator, *a, **kw: devices.append(generator.device.type)
                        or task)
    cpu = _split(5)
    train = ClassSplit(cpu.images.cuda(), cpu.class_names, cpu.char_index.cuda(), cpu.name)
    model, _ = mt.train_metric(_cfg(augment=True), train, None, progress=False, checkpoint=tmp_path / "m.pt")
    assert next(model.parameters()).device.type == "cuda"
    captured["step_loss"](EpisodeSampler(train, 3, 1, 2, seed=1).sample(1))
    assert devices == ["cuda"]
    loaded, _ = mt.load_metric(tmp_path / "m.pt", device="cuda")
    assert next(loaded.parameters()).device.type == "cuda"
    monkeypatch.setattr(data_mod, "omniglot_split", lambda data, split, part, **kw: train)
    data = type("D", (), {"images": torch.zeros(1, 20, 28, 28), "alphabet": torch.arange(5)})()
    assert mt._splits(_cfg(), "cuda", data=data)[2].device.type == "cuda"
