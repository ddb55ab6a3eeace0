"""metalib.blackbox_train: behaviour that `make mutants MODULES=blackbox_train.py` showed untested by
tests/test_blackbox.py: the measurement's documented defaults and how it splits episodes into batches.
References are counts by hand and a model whose predictions are known.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metalib
from metalib.blackbox_train import accuracy_by_position
from metalib.data import ClassSplit


class _Recorder:
    """An episode sampler that records each batch size and the generator's seed."""

    def __init__(self, sampler):
        self.inner, self.split, self.n_way, self.k_shot = sampler, sampler.split, sampler.n_way, sampler.k_shot
        self.batches, self.seeds = [], []

    def sample(self, n, generator=None):
        self.batches.append(n)
        self.seeds.append(generator.initial_seed())
        return self.inner.sample(n, generator=generator)


def _perfect(task, gen):
    """Targets in sequence order (supports as given, then queries) and logits that name each one."""
    targets = torch.cat([task.y_support, task.y_query], 1)
    return F.one_hot(targets, 3).float(), targets


def _sampler():
    images = (torch.rand(3, 4, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images, class_names=("a", "b", "c"), char_index=torch.arange(3), name="three")
    return _Recorder(metalib.EpisodeSampler(split, 3, 1, 1, seed=0))


def test_accuracy_by_position_defaults_to_600_episodes_in_batches_of_100_seeded_0():
    sampler = _sampler()
    acc = accuracy_by_position(_perfect, sampler)
    assert sampler.batches == [100] * 6 and set(sampler.seeds) == {0}
    torch.testing.assert_close(acc, torch.ones(3))  # 1-shot: every class's last (only) position is seen


def test_accuracy_by_position_takes_exactly_the_episodes_asked_for():
    sampler = _sampler()
    accuracy_by_position(_perfect, sampler, episodes=25, batch_size=10, seed=3)
    assert sampler.batches == [10, 10, 5] and set(sampler.seeds) == {3}


def test_checkpoint_names_mark_only_an_lstm_on_a_conv4():
    from metalib.blackbox_train import BlackBoxConfig, checkpoint_name
    assert checkpoint_name(BlackBoxConfig("lstm", 3, 2, encoder="conv")) == "blackbox_lstm_3w2s_conv.pt"
    assert checkpoint_name(BlackBoxConfig("lstm", 4, 1, encoder="flat")) == "blackbox_lstm_4w1s.pt"
    assert checkpoint_name(BlackBoxConfig("attention", 5, 1, encoder="conv")) == "blackbox_attention_5w1s.pt"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the measurement runs where the split lives")
def test_accuracy_by_position_runs_on_the_splits_device():
    images = (torch.rand(3, 4, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images.cuda(), class_names=("a", "b", "c"), char_index=torch.arange(3).cuda(),
                       name="three")
    acc = accuracy_by_position(_perfect, metalib.EpisodeSampler(split, 3, 1, 1, seed=0), episodes=20, batch_size=10)
    torch.testing.assert_close(acc, torch.ones(3))


def test_train_blackbox_samples_seeded_episodes_and_shows_progress_by_default(monkeypatch):
    """The training episodes come from an EpisodeSampler seeded by cfg.train.seed; a progress bar
    named after the experiment is on unless turned off."""
    import metalib.blackbox_train as bt
    seen = {}
    monkeypatch.setattr(bt, "meta_train", lambda model, step_loss, sample, cfg, **kw: seen.update(sample=sample, **kw)
                        or metalib.History())
    images = (torch.rand(4, 6, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images, class_names=tuple("abcd"), char_index=torch.arange(4), name="four")
    cfg = bt.BlackBoxConfig(encoder="flat", n_way=3, k_shot=2, n_query=1, hidden=4,
                            train=metalib.TrainConfig(steps=1, meta_batch=2, seed=3))
    bt.train_blackbox(cfg, split)
    assert seen["progress"] is True and seen["desc"] == "lstm 3-way 2-shot"
    want = metalib.EpisodeSampler(split, 3, 2, 1, seed=3).sample(5)
    got = seen["sample"](5)
    assert torch.equal(got.x_support, want.x_support) and torch.equal(got.y_query, want.y_query)
    bt.train_blackbox(cfg, split, progress=False)
    assert seen["progress"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: training and loading on a device")
def test_train_and_load_on_the_splits_device(tmp_path):
    import metalib.blackbox_train as bt
    images = (torch.rand(4, 6, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images.cuda(), class_names=tuple("abcd"), char_index=torch.arange(4).cuda(),
                       name="four")
    cfg = bt.BlackBoxConfig(encoder="flat", n_way=2, hidden=4, train=metalib.TrainConfig(steps=1, meta_batch=2))
    model, _ = bt.train_blackbox(cfg, split, progress=False, checkpoint=tmp_path / "bb.pt")
    assert next(model.parameters()).device.type == "cuda"
    loaded, _ = bt.load_blackbox(tmp_path / "bb.pt", device="cuda")
    assert next(loaded.parameters()).device.type == "cuda"


def test_train_blackbox_validates_on_fixed_seeded_episodes(monkeypatch):
    """Validation: cfg.val_episodes N-way K-shot episodes with 5 queries per class, in batches of at most
    100, episode seed 0, support orders from a generator re-seeded to 0 at every call, no progress bar;
    no validation function at all without a validation split."""
    import metalib.blackbox_train as bt
    from metalib.evaluate import Accuracy
    seen, evals = {}, []
    monkeypatch.setattr(bt, "meta_train", lambda model, step_loss, sample, cfg, **kw: seen.update(model=model, **kw)
                        or metalib.History())
    monkeypatch.setattr(bt, "evaluate_accuracy", lambda predict, sampler, **kw: evals.append((predict, sampler, kw))
                        or Accuracy(0.5, 0.1, kw["episodes"]))
    images = (torch.rand(4, 8, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images, class_names=tuple("abcd"), char_index=torch.arange(4), name="four")
    bt.train_blackbox(bt.BlackBoxConfig(encoder="flat", n_way=3, k_shot=2, hidden=4), split, progress=False)
    assert seen["validate"] is None
    for val_episodes, batch in ((7, 7), (150, 100)):
        cfg = bt.BlackBoxConfig(encoder="flat", n_way=3, k_shot=2, hidden=4, val_episodes=val_episodes)
        bt.train_blackbox(cfg, split, split, progress=False)
        assert seen["validate"]() == {"acc": 0.5}
        predict, sampler, kw = evals[-1]
        assert kw == {"episodes": val_episodes, "batch_size": batch, "seed": 0, "progress": False}
        assert (sampler.n_way, sampler.k_shot, sampler.n_query) == (3, 2, 5)
    task = metalib.EpisodeSampler(split, 3, 2, 5, seed=1).sample(2)
    want = seen["model"].predict(task, torch.Generator().manual_seed(0))
    torch.manual_seed(1)  # a predict that drew its orders from the global RNG would differ
    assert torch.equal(predict(task), want)


def test_build_learner_passes_every_size_of_the_config():
    """Non-default sizes reach the modules: encoder width and BatchNorm, LSTM units and layers, transformer
    width, heads, blocks and feed-forward width (2 x hidden)."""
    from torch import nn

    from metalib.blackbox_train import BlackBoxConfig, build_learner
    lstm = build_learner(BlackBoxConfig("lstm", 2, encoder="conv", conv_hidden=8, batch_norm=False, hidden=16, layers=2))
    assert lstm.feat_dim == 8 and not any(isinstance(m, nn.BatchNorm2d) for m in lstm.modules())
    assert (lstm.lstm.hidden_size, lstm.lstm.num_layers) == (16, 2)
    att = build_learner(BlackBoxConfig("attention", 3, encoder="conv", conv_hidden=8, hidden=32, heads=2, layers=3))
    assert att.feat_dim == 8 and any(isinstance(m, nn.BatchNorm2d) for m in att.modules())
    assert att.embed.out_features == 32 and len(att.blocks.layers) == 3
    assert att.blocks.layers[0].self_attn.num_heads == 2 and att.blocks.layers[0].linear1.out_features == 64


def test_checkpoint_records_the_device_and_the_training_time(tmp_path):
    """The saved metadata says where the model trained and how long it took (0 < seconds < wall time)."""
    import time

    import metalib.blackbox_train as bt
    images = (torch.rand(4, 6, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    split = ClassSplit(images=images, class_names=tuple("abcd"), char_index=torch.arange(4), name="four")
    cfg = bt.BlackBoxConfig(encoder="flat", n_way=2, hidden=4, train=metalib.TrainConfig(steps=1, meta_batch=2))
    start = time.perf_counter()
    bt.train_blackbox(cfg, split, progress=False, checkpoint=tmp_path / "bb.pt", command="pytest")
    wall = time.perf_counter() - start
    _, meta = bt.load_blackbox(tmp_path / "bb.pt")
    assert meta["device"] == "cpu" and meta["command"] == "pytest"
    assert 0 < meta["train_seconds"] < wall, (meta["train_seconds"], wall)
