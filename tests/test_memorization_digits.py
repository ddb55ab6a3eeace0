"""Notebook 09's data: non-mutually-exclusive tasks (EpisodeSampler(fixed_labels=True)), the memorisation
experiment (metalib.memorization) and the digits domain (metalib.data.digits_split)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from metalib.data import ClassSplit, digits_split
from metalib.memorization import MemorizationConfig, class_subset, noise_support, run_memorization
from metalib.tasks import EpisodeSampler
from metalib.train import TrainConfig


def _split(C=23, M=6, side=4) -> ClassSplit:
    """Class c's images are all filled with the value c, so a task's pixels name its classes."""
    images = torch.arange(C, dtype=torch.uint8).view(C, 1, 1, 1).expand(C, M, side, side).contiguous()
    return ClassSplit(images, tuple(f"c{i}" for i in range(C)), torch.arange(C), "toy")


def _labels_by_class(sampler, batches=20):
    seen: dict[int, set[int]] = {}
    for _ in range(batches):
        task = sampler.sample(16)
        cls = (task.x_support[..., 0, 0, 0] * 255).round().long()  # (B, N*K) the class of each support image
        for c, y in zip(cls.flatten().tolist(), task.y_support.flatten().tolist()):
            seen.setdefault(c, set()).add(y)
        qcls = (task.x_query[..., 0, 0, 0] * 255).round().long()
        assert all(len(set(task.y_query[b][qcls[b] == c].tolist())) == 1 for b in range(16) for c in qcls[b].tolist())
    return seen


def test_fixed_labels_keep_each_class_on_one_label_across_tasks():
    seen = _labels_by_class(EpisodeSampler(_split(), 5, 2, 3, seed=0, fixed_labels=True))
    assert len(seen) == 23, "every class is drawn"
    assert all(labels == {c % 5} for c, labels in seen.items()), seen


def test_shuffled_labels_vary_per_task():
    seen = _labels_by_class(EpisodeSampler(_split(), 5, 2, 3, seed=0))
    assert all(len(labels) > 1 for labels in seen.values()), "a class kept its label in every task"


def test_fixed_labels_tasks_are_valid_and_reproducible():
    a = EpisodeSampler(_split(), 5, 1, 2, seed=4, fixed_labels=True).sample(8)
    b = EpisodeSampler(_split(), 5, 1, 2, seed=4, fixed_labels=True).sample(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    cls = (a.x_support[..., 0, 0, 0] * 255).round().long()  # (8, 5) one class per label, all distinct
    assert all(len(set(row.tolist())) == 5 for row in cls)
    with pytest.raises(ValueError, match="cannot be combined"):
        EpisodeSampler(_split(), 5, 1, 2, fixed_labels=True, groups=torch.zeros(23, dtype=torch.long))


def test_noise_support_and_class_subset():
    task = EpisodeSampler(_split(), 3, 1, 2, seed=0).sample(2)
    noisy = noise_support(task, torch.Generator().manual_seed(0))
    assert noisy.x_support.shape == task.x_support.shape and not torch.equal(noisy.x_support, task.x_support)
    assert torch.equal(noisy.x_query, task.x_query) and torch.equal(noisy.y_support, task.y_support)
    sub = class_subset(_split(), 7)
    assert sub.n_classes == 7 and sub.class_names[-1] == "c6"
    with pytest.raises(ValueError):
        class_subset(_split(), 0)


def test_memorization_experiment_runs_end_to_end_quickly():
    cfg = MemorizationConfig(classes=10, hidden=4, episodes=3, train=TrainConfig(steps=2, meta_batch=2, eval_every=0))
    out = run_memorization(cfg)
    assert set(out) == {"fixed", "shuffled"}
    for r in out.values():
        for key in ("train_acc", "train_acc_0", "noise_acc", "new_acc"):
            assert 0.0 <= r[key][0] <= 1.0
        assert len(r["history"]["train"]) == 2


def test_digits_split_is_omniglot_shaped_and_deterministic():
    split = digits_split()
    assert split.images.shape == (10, 174, 28, 28) and split.images.dtype == torch.uint8
    assert int(split.images.max()) == 255, "ink = 255"
    border = torch.cat([split.images[..., :4, :].flatten(), split.images[..., -4:, :].flatten(),
                        split.images[..., :4].flatten(), split.images[..., -4:].flatten()])
    assert int(border.max()) == 0, "a 4-pixel empty margin around every digit"
    assert torch.equal(split.images, digits_split().images)
    from sklearn.datasets import load_digits
    bunch = load_digits()
    first_seven = torch.as_tensor(bunch.images[list(bunch.target).index(7)])  # 8x8, 0..16
    pooled = torch.nn.functional.adaptive_avg_pool2d(split.images[7, :1, 4:-4, 4:-4].float()[None], 8)[0, 0] / 255
    assert torch.corrcoef(torch.stack([pooled.flatten(), first_seven.flatten()]))[0, 1] > 0.9, "row 7 is not digit 7"
    for n_way in (5, 10):
        task = EpisodeSampler(split, n_way, 1, 5, seed=0).sample(3)
        assert task.x_support.shape == (3, n_way, 1, 28, 28) and task.y_query.shape == (3, 5 * n_way)
        assert float(task.x_query.max()) <= 1.0
    with pytest.raises(ValueError, match="per_class"):
        digits_split(per_class=175)


def test_memorization_config_quick_overrides_are_fields():
    cfg = MemorizationConfig()
    dataclasses.replace(cfg, **cfg.quick_overrides())
    assert cfg.maml_config().val_episodes == 0
