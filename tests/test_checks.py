"""Tests of metalib.checks: each helper passes good input and fails bad input with a useful message."""
from __future__ import annotations

import math

import pytest
import torch

from metalib import checks
from metalib.data import ClassSplit
from metalib.tasks import EpisodeSampler, Task


# ----------------------------------------------------------------------------- assert_shape

def test_assert_shape_passes():
    checks.assert_shape(torch.zeros(2, 3), (2, 3))
    checks.assert_shape(torch.zeros(2, 3), (-1, 3))
    checks.assert_shape([[1, 2, 3]], (1, 3))  # anything torch.as_tensor accepts
    checks.assert_shape(torch.tensor(1.0), ())


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 1), (2,), (-1, 4)])
def test_assert_shape_fails(shape):
    with pytest.raises(AssertionError) as info:
        checks.assert_shape(torch.zeros(2, 3), shape, name="logits")
    msg = str(info.value)
    assert "logits has shape (2, 3)" in msg
    assert f"expected {tuple(shape)}" in msg


@pytest.mark.parametrize("value", [None, Ellipsis])
def test_returned_nothing(value):
    for call in (lambda: checks.assert_shape(value, (1,), name="proto"),
                 lambda: checks.assert_finite(value, name="proto"),
                 lambda: checks.assert_close(value, torch.zeros(1), name="proto"),
                 lambda: checks.assert_rows_close(value, torch.zeros(1, 1), row_name="proto")):
        with pytest.raises(AssertionError) as info:
            call()
        msg = str(info.value)
        assert "proto is" in msg and "returned nothing" in msg
        assert repr(value) in msg


def test_not_a_tensor():
    with pytest.raises(AssertionError, match="x should be a tensor, got object"):
        checks.assert_shape(object(), (1,), name="x")


# ----------------------------------------------------------------------------- assert_finite

def test_assert_finite_passes():
    checks.assert_finite(torch.randn(5))
    checks.assert_finite(torch.arange(4))  # integers are always finite
    checks.assert_finite(torch.tensor([1e38, -1e38]))


@pytest.mark.parametrize("bad,count", [(torch.tensor([1.0, math.nan, 2.0]), 1),
                                       (torch.tensor([math.inf, -math.inf, math.nan, 0.0]), 3)])
def test_assert_finite_fails(bad, count):
    with pytest.raises(AssertionError) as info:
        checks.assert_finite(bad, name="loss")
    msg = str(info.value)
    assert "loss has" in msg and "NaN" in msg
    assert f"{count} NaN/inf entries out of {bad.numel()}" in msg


# ----------------------------------------------------------------------------- assert_close

def test_assert_close_passes():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    checks.assert_close(a, a.clone())
    checks.assert_close(a + 5e-6, a)
    checks.assert_close(a * (1 + 1e-3), a, rtol=2e-3, atol=0)
    checks.assert_close(a.double(), a)  # dtype may differ
    checks.assert_close([[1.0, 2.0], [3.0, 4.0]], a)
    checks.assert_close(torch.tensor(2.0), torch.tensor(2.0))


def test_assert_close_reports_worst_error_and_index():
    expected = torch.zeros(3, 4)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[2, 0] = 0.1
    with pytest.raises(AssertionError) as info:
        checks.assert_close(actual, expected, name="grad")
    msg = str(info.value)
    assert msg.startswith("grad differs")
    assert "max abs error 0.5" in msg
    assert "at [1, 2]" in msg
    assert "got 0.5" in msg and "expected 0" in msg
    assert "atol=1e-05" in msg


def test_assert_close_relative_tolerance_is_used():
    expected = torch.tensor([1000.0, 1.0])
    actual = torch.tensor([1000.5, 1.5])
    # the large entry is within rtol, the small one is not: it is the one reported
    with pytest.raises(AssertionError, match=r"at \[1\]"):
        checks.assert_close(actual, expected, atol=0, rtol=1e-3)


def test_assert_close_scalar_fails():
    with pytest.raises(AssertionError, match="max abs error 1"):
        checks.assert_close(torch.tensor(1.0), torch.tensor(2.0), name="s")


def test_assert_close_shape_mismatch():
    with pytest.raises(AssertionError) as info:
        checks.assert_close(torch.zeros(2, 3), torch.zeros(3, 2), name="w")
    assert "w has shape (2, 3), expected (3, 2)" in str(info.value)


def test_assert_close_nan():
    with pytest.raises(AssertionError, match="NaN"):
        checks.assert_close(torch.tensor([0.0, math.nan]), torch.zeros(2), name="out")


def test_assert_close_does_not_broadcast():
    with pytest.raises(AssertionError, match="has shape"):
        checks.assert_close(torch.zeros(4), torch.zeros(1))


# ----------------------------------------------------------------------------- assert_rows_close

def test_assert_rows_close():
    e = torch.arange(12.0).view(4, 3)
    checks.assert_rows_close(e.clone(), e, row_name="prototype for class")
    a = e.clone()
    a[2, 1] += 0.31
    with pytest.raises(AssertionError) as info:
        checks.assert_rows_close(a, e, row_name="prototype for class")
    msg = str(info.value)
    assert "prototype for class 2 differs" in msg
    assert "max abs error 0.31" in msg and "at [1]" in msg
    with pytest.raises(AssertionError, match=r"prototype for classs have shape \(4, 3\), expected \(3, 3\)"):
        checks.assert_rows_close(e, e[:3], row_name="prototype for class")


def test_assert_rows_close_names_first_bad_row():
    e = torch.zeros(5, 2)
    a = e.clone()
    a[3] = 1.0
    a[4] = 2.0
    with pytest.raises(AssertionError, match="row 3 differs"):
        checks.assert_rows_close(a, e)


# ----------------------------------------------------------------------------- assert_episode
# Small synthetic splits of 4 classes x 5 drawings.

C, M = 4, 5  # 4 classes x 5 drawings = 20 images


@pytest.fixture()
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (C, M, 6, 6), generator=g, dtype=torch.uint8)


def _episode(images, n_way=2, k_shot=1, n_query=2, seed=0) -> Task:
    """A correct single episode built by hand: classes (1, 3), drawings in order."""
    classes = [1, 3, 0, 2][:n_way]
    x = images[classes, :k_shot + n_query].float().div(255).unsqueeze(2)  # (N, K+Q, 1, H, W)
    labels = torch.arange(n_way)
    return Task(x[:, :k_shot].reshape(n_way * k_shot, 1, 6, 6), labels.repeat_interleave(k_shot),
                x[:, k_shot:].reshape(n_way * n_query, 1, 6, 6), labels.repeat_interleave(n_query))


def test_assert_episode_accepts_valid(images):
    checks.assert_episode(_episode(images), images, 2, 1, 2)
    checks.assert_episode(_episode(images, n_way=3, k_shot=2, n_query=3), images, 3, 2, 3)
    # and the sampler's own episodes
    split = ClassSplit(images=images, class_names=tuple("abcd"), char_index=torch.arange(C), name="tiny")
    for seed in range(3):
        task = EpisodeSampler(split, 2, 2, 2, seed=seed).sample(1)
        checks.assert_episode(task.select(0), images, 2, 2, 2)


def test_assert_episode_wrong_shapes(images):
    t = _episode(images)
    with pytest.raises(AssertionError, match=r"x_support has shape \(2, 1, 6, 6\), expected \(4, 1, 6, 6\)"):
        checks.assert_episode(t, images, 2, 2, 1)
    with pytest.raises(AssertionError, match="x_query has shape"):
        checks.assert_episode(t._replace(x_query=t.x_query[:3]), images, 2, 1, 2)
    with pytest.raises(AssertionError, match="x_support has shape"):
        checks.assert_episode(t._replace(x_support=t.x_support[:, 0]), images, 2, 1, 2)  # channel dim missing
    with pytest.raises(AssertionError, match="y_query has shape"):
        checks.assert_episode(t._replace(y_query=t.y_query[None]), images, 2, 1, 2)


def test_assert_episode_label_dtype(images):
    t = _episode(images)
    with pytest.raises(AssertionError, match="int64"):
        checks.assert_episode(t._replace(y_support=t.y_support.float()), images, 2, 1, 2)


def test_assert_episode_unbalanced_labels(images):
    t = _episode(images)
    yq = torch.tensor([0, 0, 0, 1])
    with pytest.raises(AssertionError) as info:
        checks.assert_episode(t._replace(y_query=yq), images, 2, 1, 2)
    msg = str(info.value)
    assert "y_query" in msg and "exactly 2 times" in msg and "[3, 1]" in msg
    with pytest.raises(AssertionError, match=r"y_support should hold .*0\.\.1"):
        checks.assert_episode(t._replace(y_support=torch.tensor([0, 2])), images, 2, 1, 2)


def test_assert_episode_negative_label(images):
    t = _episode(images)
    with pytest.raises(AssertionError, match="y_support should hold"):
        checks.assert_episode(t._replace(y_support=torch.tensor([-1, 1])), images, 2, 1, 2)
    with pytest.raises(AssertionError, match="y_query should hold"):
        checks.assert_episode(t._replace(y_query=torch.tensor([0, 1, 1, 2])), images, 2, 1, 2)


def test_assert_episode_images_not_scaled(images):
    t = _episode(images)
    unscaled = t._replace(x_support=t.x_support * 255)
    with pytest.raises(AssertionError) as info:
        checks.assert_episode(unscaled, images, 2, 1, 2)
    assert "x_support[" in str(info.value) and "255" in str(info.value)
    with pytest.raises(AssertionError, match=r"x_query\[\d\] is not one of the split's images"):
        checks.assert_episode(t._replace(x_query=t.x_query * 255), images, 2, 1, 2)


def test_assert_episode_image_not_in_split(images):
    t = _episode(images)
    xq = t.x_query.clone()
    xq[3] = 1 - xq[3]
    with pytest.raises(AssertionError, match=r"x_query\[3\] is not one of the split's images"):
        checks.assert_episode(t._replace(x_query=xq), images, 2, 1, 2)


def test_assert_episode_label_mapped_to_two_classes(images):
    t = _episode(images)  # label 0 = class 1, label 1 = class 3
    xq = t.x_query.clone()
    xq[1] = images[0, 4].float().div(255)[None]  # a label-0 query drawn from class 0
    with pytest.raises(AssertionError, match="label 0 is used for images of two different classes"):
        checks.assert_episode(t._replace(x_query=xq), images, 2, 1, 2)


def test_assert_episode_classes_not_distinct(images):
    t = _episode(images, n_query=1)  # support (class 1 d0, class 3 d0), query (class 1 d1, class 3 d1)
    # label 1 uses class 1 as well: one class for two labels (all drawings still distinct)
    xs = t.x_support.clone()
    xq = t.x_query.clone()
    xs[1] = images[1, 2].float().div(255)[None]
    xq[1] = images[1, 3].float().div(255)[None]
    with pytest.raises(AssertionError, match="2 labels should come from 2 distinct classes"):
        checks.assert_episode(Task(xs, t.y_support, xq, t.y_query), images, 2, 1, 1)


def test_assert_episode_support_query_overlap(images):
    t = _episode(images)
    xq = t.x_query.clone()
    xq[0] = t.x_support[0]  # the label-0 support drawing reused as a label-0 query
    with pytest.raises(AssertionError, match="both the support and the query set"):
        checks.assert_episode(t._replace(x_query=xq), images, 2, 1, 2)


def test_assert_episode_drawing_repeated_within_set(images):
    t = _episode(images)
    xq = t.x_query.clone()
    xq[1] = xq[0]
    with pytest.raises(AssertionError, match="appears twice in one set"):
        checks.assert_episode(t._replace(x_query=xq), images, 2, 1, 2)


def test_assert_episode_accepts_valid_on_a_larger_split():
    """More than 25 images: torch.cdist's default matmul formula would give ~1e-2 between equal images."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (5, 6, 28, 28), generator=g, dtype=torch.uint8)  # 30 images > 25
    split = ClassSplit(images=imgs, class_names=tuple("abcde"), char_index=torch.arange(5), name="synthetic")
    task = EpisodeSampler(split, 3, 2, 2, seed=0).sample(1)
    checks.assert_episode(task.select(0), imgs, 3, 2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_assert_episode_with_images_on_gpu(images):
    checks.assert_episode(_episode(images).to("cuda"), images.cuda(), 2, 1, 2)


# ----------------------------------------------------------------------------- non-finite expected values

@pytest.mark.parametrize("actual", [torch.tensor([0.0, 1.0]), torch.tensor([0.0, 123.0]), torch.tensor([0.0, math.inf]),
                                    torch.tensor([0.0, math.nan])])
def test_assert_close_never_matches_an_expected_nan(actual):
    """Comparisons with NaN are false, so `err > bound` alone would let anything through."""
    with pytest.raises(AssertionError, match=r"expected out is NaN at \[1\].*NaN != NaN"):
        checks.assert_close(actual, torch.tensor([0.0, math.nan]), name="out")


@pytest.mark.parametrize("inf", [math.inf, -math.inf])
def test_assert_close_expected_infinity_needs_the_same_infinity(inf):
    expected = torch.tensor([[1.0, inf], [2.0, 3.0]])
    checks.assert_close(torch.tensor([[1.0, inf], [2.0, 3.0]]), expected)  # equal: passes
    for wrong in (0.0, 1e30, -inf, math.nan):
        actual = torch.tensor([[1.0, wrong], [2.0, 3.0]])
        with pytest.raises(AssertionError, match=rf"logp at \[0, 1\] is .*expected {inf:g}"):
            checks.assert_close(actual, expected, name="logp")
    # the finite entries are still compared, and reported at their own index
    with pytest.raises(AssertionError, match=r"logp differs: max abs error 0.5 at \[1, 0\]"):
        checks.assert_close(torch.tensor([[1.0, inf], [2.5, 3.0]]), expected, name="logp")
    with pytest.raises(AssertionError, match="logp has 1 NaN/inf entries"):
        checks.assert_close(torch.tensor([[1.0, inf], [2.0, math.nan]]), expected, name="logp")


def test_assert_close_infinite_scalar():
    checks.assert_close(torch.tensor(-math.inf), torch.tensor(-math.inf))
    with pytest.raises(AssertionError, match=r"v at \[\] is 0, expected -inf"):
        checks.assert_close(0.0, -math.inf, name="v")


# ----------------------------------------------------------------------------- forbid_calls

@pytest.mark.parametrize("call", [lambda z: torch.softmax(z, -1), lambda z: torch.nn.functional.softmax(z, dim=-1),
                                  lambda z: z.softmax(-1), lambda z: torch.nn.Softmax(dim=-1)(z),
                                  lambda z: torch.special.softmax(z, -1), lambda z: torch.log_softmax(z, -1).exp()])
def test_forbid_calls_catches_every_spelling(call):
    z = torch.randn(2, 3)
    with pytest.raises(AssertionError, match="asks you not to use softmax / log_softmax .*: use exp and sum"):
        with checks.forbid_calls("softmax", "log_softmax", "special_softmax", why="use exp and sum"):
            call(z)
    call(z)  # allowed again after the block


def test_forbid_calls_lets_everything_else_through():
    z = torch.randn(2, 3)
    with checks.forbid_calls("softmax"):
        e = (z - z.max(-1, keepdim=True).values).exp()
        p = e / e.sum(-1, keepdim=True)
        q = torch.exp(z - torch.logsumexp(z, -1, keepdim=True))
    checks.assert_close(p, torch.softmax(z, -1), atol=1e-6)
    checks.assert_close(q, p, atol=1e-6)
