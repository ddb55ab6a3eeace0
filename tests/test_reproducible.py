"""Same seed -> identical numbers: training histories, evaluation accuracies, baselines."""
from __future__ import annotations

import dataclasses

import pytest

import metalib
from metalib import baselines as bl


@pytest.fixture(scope="module")
def test_split():
    return metalib.omniglot_split(metalib.load_omniglot(), "vinyals", "test")


def test_pretraining_history_is_reproducible(test_split):
    cfg = bl.PretrainConfig(train=metalib.TrainConfig(steps=3, meta_batch=8, eval_every=0), hidden=8)
    images = test_split.images[:50]
    runs = [bl.pretrain_classifier(images, cfg, seed=5, progress=False)[1] for _ in range(2)]
    losses = [[r["loss"] for r in h.train] for h in runs]
    assert losses[0] == losses[1], f"same seed, different losses: {losses}"
    other = bl.pretrain_classifier(images, cfg, seed=6, progress=False)[1]
    assert [r["loss"] for r in other.train] != losses[0], "a different seed should change the run"


def test_evaluation_numbers_are_reproducible(test_split):
    sampler = metalib.EpisodeSampler(test_split, 5, 1, 5, seed=0)
    cfg = bl.ScratchConfig(steps=2, hidden=8)
    acc = [metalib.evaluate_accuracy(lambda t: bl.train_from_scratch(t, cfg), sampler, episodes=8,
                                     batch_size=4, progress=False) for _ in range(2)]
    assert acc[0] == acc[1], f"same seeds, different accuracies: {acc}"
    nn = [metalib.evaluate_accuracy(bl.pixel_nearest_neighbour, sampler, episodes=100, progress=False, seed=s)
          for s in (1, 1, 2)]
    assert nn[0] == nn[1] and dataclasses.asdict(nn[0]) != dataclasses.asdict(nn[2])
