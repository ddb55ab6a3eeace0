"""Tests of metalib.tasks: the Task tuple and the N-way K-shot EpisodeSampler (on real Omniglot)."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

import metalib
from metalib import EpisodeSampler, Task, checks
from metalib.data import ClassSplit


@pytest.fixture(scope="module")
def split():
    data = metalib.load_omniglot(download=False, progress=False)
    return metalib.omniglot_split(data, "vinyals", "test")  # 1692 classes (423 x 4 rotations)


def _drawing_index(img: torch.Tensor, drawings: torch.Tensor) -> list[int]:
    """Indices of the drawings (M, H, W) uint8 equal to ``img`` (1, H, W) float in [0, 1]."""
    as_uint8 = (img[0] * 255).round().to(torch.uint8)
    assert torch.allclose(img[0] * 255, as_uint8.float(), atol=1e-3), "image is not a uint8 image / 255"
    return torch.nonzero((drawings == as_uint8).flatten(1).all(1)).flatten().tolist()


@pytest.mark.parametrize("B,N,K,Q", [(4, 5, 1, 15), (2, 20, 5, 15)])
def test_shapes_and_labels(split, B, N, K, Q):
    task = EpisodeSampler(split, N, K, Q, seed=0).sample(B)
    assert isinstance(task, Task)
    assert task.x_support.shape == (B, N * K, 1, 28, 28)
    assert task.x_query.shape == (B, N * Q, 1, 28, 28)
    assert task.y_support.shape == (B, N * K)
    assert task.y_query.shape == (B, N * Q)
    assert task.batch_size == B
    assert task.x_support.dtype == torch.float32 and task.x_query.dtype == torch.float32
    assert task.y_support.dtype == torch.int64 and task.y_query.dtype == torch.int64
    for x in (task.x_support, task.x_query):
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.max() == 1.0  # scaled by 255, not left as 0..255 nor squashed
    # class-major relabelling 0..N-1
    assert torch.equal(task.y_support, torch.arange(N).repeat_interleave(K).expand(B, -1))
    assert torch.equal(task.y_query, torch.arange(N).repeat_interleave(Q).expand(B, -1))


def test_dtype_option(split):
    task = EpisodeSampler(split, 3, 1, 2, seed=0, dtype=torch.float64).sample(2)
    assert task.x_support.dtype == torch.float64 and task.x_query.dtype == torch.float64
    assert task.x_support.max() <= 1.0


@pytest.mark.parametrize("B,N,K,Q", [(4, 5, 1, 15), (2, 20, 5, 15)])
def test_images_come_from_their_classes(split, B, N, K, Q):
    sampler = EpisodeSampler(split, N, K, Q, seed=1)
    task, classes = sampler.sample_with_classes(B)
    assert classes.shape == (B, N)
    assert classes.min() >= 0 and classes.max() < split.n_classes
    for b in range(B):
        assert len(set(classes[b].tolist())) == N, "the N classes of a task must be distinct"
        for n in range(N):
            drawings = split.images[classes[b, n]]  # (20, 28, 28)
            sup = [_drawing_index(task.x_support[b, i], drawings) for i in range(n * K, (n + 1) * K)]
            qry = [_drawing_index(task.x_query[b, i], drawings) for i in range(n * Q, (n + 1) * Q)]
            assert all(sup) and all(qry), f"task {b}, label {n}: an image is not a drawing of class {int(classes[b, n])}"
            # no drawing is used twice (in one set, or in both): a group of g identical drawings
            # (Omniglot has a few exact duplicates) may be used at most g times
            uses = Counter(tuple(m) for m in sup + qry)
            assert all(count <= len(group) for group, count in uses.items()), f"task {b}, label {n}: a drawing is reused"


def test_assert_episode_accepts_sampled_task(split):
    task = EpisodeSampler(split, 5, 1, 15, seed=2).sample(1)
    checks.assert_episode(task.select(0), split.images, 5, 1, 15)


def test_same_seed_same_episodes_different_seed_different(split):
    a = EpisodeSampler(split, 5, 1, 15, seed=7).sample(4)
    b = EpisodeSampler(split, 5, 1, 15, seed=7).sample(4)
    c = EpisodeSampler(split, 5, 1, 15, seed=8).sample(4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.x_support, c.x_support)
    assert not torch.equal(a.x_query, c.x_query)


def test_successive_batches_differ(split):
    sampler = EpisodeSampler(split, 5, 1, 15, seed=0)
    assert not torch.equal(sampler.sample(4).x_support, sampler.sample(4).x_support)


def test_explicit_generator(split):
    sampler = EpisodeSampler(split, 5, 1, 5, seed=0)
    state = sampler.generator.get_state()
    a = sampler.sample(3, generator=metalib.make_generator(42))
    b = sampler.sample(3, generator=metalib.make_generator(42))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(sampler.generator.get_state(), state), "an explicit generator must not advance the sampler's own"


def test_sampling_leaves_global_rng_alone(split):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    sampler = EpisodeSampler(split, 5, 1, 15, seed=0)
    sampler.sample(4)
    sampler.sample_with_classes(2)
    assert torch.equal(torch.get_rng_state(), state)


def test_classes_and_drawings_cover_the_split():
    """Uniform sampling: on a 10-class split every class and every drawing slot is used about equally."""
    C, M = 10, 20
    # each pixel value encodes (class, drawing): image value = class * 20 + drawing
    ids = torch.arange(C * M, dtype=torch.uint8).view(C, M, 1, 1).expand(C, M, 28, 28).contiguous()
    tiny = ClassSplit(images=ids, class_names=tuple(f"c{i}" for i in range(C)), char_index=torch.arange(C), name="tiny")
    task, classes = EpisodeSampler(tiny, 5, 2, 3, seed=0).sample_with_classes(2000)
    counts = torch.bincount(classes.flatten(), minlength=C).float()
    assert (counts - 1000).abs().max() < 150, counts  # expected 2000 * 5 / 10 = 1000
    vals = torch.cat([task.x_support, task.x_query], 1)[..., 0, 0, 0].mul(255).round().long()  # (B, 25)
    assert torch.equal(vals // M, torch.cat([classes.repeat_interleave(2, 1), classes.repeat_interleave(3, 1)], 1))
    drawing_counts = torch.bincount((vals % M).flatten(), minlength=M).float()
    assert (drawing_counts - drawing_counts.mean()).abs().max() < 0.15 * drawing_counts.mean(), drawing_counts


# ----------------------------------------------------------------------------- bad input

def test_n_way_larger_than_classes(split):
    n = split.n_classes
    with pytest.raises(ValueError) as info:
        EpisodeSampler(split, n + 1, 1, 1)
    assert str(n + 1) in str(info.value) and str(n) in str(info.value)
    EpisodeSampler(split, n, 1, 1)  # exactly all classes is fine


def test_k_plus_q_larger_than_drawings(split):
    with pytest.raises(ValueError) as info:
        EpisodeSampler(split, 5, 10, 11)
    msg = str(info.value)
    assert "21" in msg and "20" in msg
    EpisodeSampler(split, 5, 10, 10)  # exactly 20 is fine


@pytest.mark.parametrize("kwargs,name", [(dict(n_way=0, k_shot=1, n_query=1), "n_way"),
                                         (dict(n_way=5, k_shot=0, n_query=1), "k_shot"),
                                         (dict(n_way=5, k_shot=1, n_query=-2), "n_query"),
                                         (dict(n_way=5, k_shot=1.5, n_query=1), "k_shot")])
def test_non_positive_sizes(split, kwargs, name):
    with pytest.raises(ValueError) as info:
        EpisodeSampler(split, **kwargs)
    value = kwargs[name]
    assert name in str(info.value) and str(value) in str(info.value)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_bad_batch_size(split, batch_size):
    sampler = EpisodeSampler(split, 5, 1, 1)
    with pytest.raises(ValueError) as info:
        sampler.sample(batch_size)
    assert "batch_size" in str(info.value) and str(batch_size) in str(info.value)


# ----------------------------------------------------------------------------- Task

def _small_task(B=3) -> Task:
    g = metalib.make_generator(0)
    return Task(torch.rand(B, 4, 2, generator=g), torch.arange(4).repeat(B, 1),
                torch.rand(B, 6, 2, generator=g), torch.arange(6).repeat(B, 1))


def test_task_select_and_batch_size():
    task = _small_task(3)
    assert task.batch_size == 3
    one = task.select(1)
    assert isinstance(one, Task)
    assert one.x_support.shape == (4, 2) and one.y_query.shape == (6,)
    assert torch.equal(one.x_query, task.x_query[1])
    part = task.select(slice(1, 3))
    assert part.batch_size == 2
    assert all(torch.equal(a, b[1:3]) for a, b in zip(part, task))


def test_task_to():
    task = _small_task(2)
    same = task.to("cpu")
    assert isinstance(same, Task)
    assert all(torch.equal(a, b) for a, b in zip(same, task))
    moved = task.to("meta")  # a real device change that works without a GPU
    assert isinstance(moved, Task)
    assert all(t.device.type == "meta" for t in moved)
    assert [t.shape for t in moved] == [t.shape for t in task]


def test_repr_mentions_setup(split):
    r = repr(EpisodeSampler(split, 5, 1, 15))
    assert "5-way" in r and "1-shot" in r and "vinyals/test" in r
