"""metalib.checks: behaviour that the mutation run of `make mutants MODULES=checks.py` showed untested.

Each test is named after what it guards; the messages checked here are what a student reads when an
autograder check fails, so a message naming the wrong thing is a bug.
"""
from __future__ import annotations

import math

import pytest
import torch

from metalib import checks
from metalib.tasks import Task


def test_assert_rows_close_passes_its_tolerances_to_every_row():
    e = torch.zeros(3, 2)
    near = e + 0.05
    checks.assert_rows_close(near, e, atol=0.1, rtol=0)  # within atol, not within the default 1e-5
    big = torch.full((3, 2), 1000.0)
    checks.assert_rows_close(big + 0.5, big, atol=0, rtol=1e-3)  # within rtol only
    with pytest.raises(AssertionError, match="rtol=0.001"):
        checks.assert_rows_close(big + 2.0, big, atol=0, rtol=1e-3)


def test_assert_rows_close_names_the_missing_expected_value():
    with pytest.raises(AssertionError, match="expected prototype is None"):
        checks.assert_rows_close(torch.zeros(2, 2), None, row_name="prototype")


def _images():
    return torch.randint(0, 256, (4, 5, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("nothing", [None, Ellipsis])
def test_assert_episode_says_the_function_returned_nothing(nothing):
    with pytest.raises(AssertionError) as info:
        checks.assert_episode(nothing, _images(), 2, 1, 2)
    msg = str(info.value)
    assert f"the episode is {nothing!r}" in msg and "returned nothing" in msg and "return" in msg


def test_assert_episode_names_what_it_got_instead_of_a_task():
    with pytest.raises(AssertionError, match=r"expected Task\(x_support, y_support, x_query, y_query\), got tuple"):
        checks.assert_episode((torch.zeros(2, 1, 6, 6), torch.zeros(2)), _images(), 2, 1, 2)
    with pytest.raises(AssertionError, match="got int"):
        checks.assert_episode(3, _images(), 2, 1, 2)


def test_assert_episode_names_the_support_labels_when_their_shape_is_wrong():
    x = torch.zeros(2, 1, 6, 6)
    task = Task(x, torch.zeros(2, 1, dtype=torch.int64), torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(AssertionError, match=r"^y_support has shape \(2, 1\), expected \(2,\)$"):
        checks.assert_episode(task, _images(), 2, 1, 2)


def _episode(images, classes=(1, 3), k_shot=1, n_query=2) -> Task:
    """A correct episode from ``images`` (C, M, H, W): the given classes, drawings in order."""
    n, (h, w) = len(classes), images.shape[-2:]
    x = images[list(classes), :k_shot + n_query].float().div(255).unsqueeze(2)  # (N, K+Q, 1, H, W)
    labels = torch.arange(n)
    return Task(x[:, :k_shot].reshape(n * k_shot, 1, h, w), labels.repeat_interleave(k_shot),
                x[:, k_shot:].reshape(n * n_query, 1, h, w), labels.repeat_interleave(n_query))


def test_assert_episode_label_equal_to_n_way_is_reported_as_out_of_range():
    t = _episode(_images())
    with pytest.raises(AssertionError, match=r"y_query should hold labels 0\.\.1, got values from 0 to 2"):
        checks.assert_episode(t._replace(y_query=torch.tensor([0, 1, 1, 2])), _images(), 2, 1, 2)


def test_assert_episode_label_counts_message_lists_every_label():
    t = _episode(_images())
    with pytest.raises(AssertionError) as info:
        checks.assert_episode(t._replace(y_support=torch.tensor([0, 0])), _images(), 2, 1, 2)
    assert "y_support should hold each label 0..1 exactly 1 times, got counts [2, 0]" in str(info.value)


def test_assert_episode_works_with_more_classes_than_drawings_per_class():
    """Omniglot has 964 classes of 20 drawings: a class index beyond the drawings count must still work."""
    imgs = torch.randint(0, 256, (6, 3, 5, 5), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    checks.assert_episode(_episode(imgs, classes=(5, 4), k_shot=1, n_query=2), imgs, 2, 1, 2)
    bad = _episode(imgs, classes=(5, 4))  # label 0 support from class 5, query from class 0
    xq = bad.x_query.clone()
    xq[0] = imgs[0, 1].float().div(255)[None]
    with pytest.raises(AssertionError, match="label 0 is used for images of two different classes"):
        checks.assert_episode(bad._replace(x_query=xq), imgs, 2, 1, 2)


def test_assert_episode_rejects_images_scaled_by_256_instead_of_255():
    imgs = _images()
    t = _episode(imgs)
    off = t._replace(x_support=t.x_support * 255 / 256)  # off by 0.4%: not the split's images
    with pytest.raises(AssertionError, match=r"x_support\[\d\] is not one of the split's images scaled to \[0, 1\]"):
        checks.assert_episode(off, imgs, 2, 1, 2)


def test_assert_episode_repeated_drawing_is_caught_beside_a_near_identical_one():
    imgs = _images().clone()
    imgs[3, 4] = imgs[3, 1]
    imgs[3, 4, 0, 0] = imgs[3, 1, 0, 0] ^ 64  # class 3 drawing 4 differs from drawing 1 in one pixel only
    t = _episode(imgs)  # queries of label 1: class 3 drawings 1 and 2
    xq = t.x_query.clone()
    xq[3] = imgs[3, 1].float().div(255)[None]  # drawing 1 of class 3 used twice in the query set
    with pytest.raises(AssertionError, match="appears twice in one set"):
        checks.assert_episode(t._replace(x_query=xq), imgs, 2, 1, 2)


# ----------------------------------------------------------------------------- assert_close / _shape / _finite


def test_assert_close_with_zero_tolerance_accepts_an_exact_match():
    """The bound is inclusive: |actual - expected| <= atol + rtol * |expected| passes, with equality."""
    checks.assert_close(torch.tensor([0.25, -3.0]), torch.tensor([0.25, -3.0]), atol=0, rtol=0)
    checks.assert_close(torch.tensor([1.5]), torch.tensor([1.0]), atol=0.5, rtol=0)  # error == atol exactly
    checks.assert_close(torch.tensor([3.0]), torch.tensor([2.0]), atol=0, rtol=0.5)  # error == rtol * |e| exactly
    with pytest.raises(AssertionError, match="max abs error 0.5"):
        checks.assert_close(torch.tensor([1.5]), torch.tensor([1.0]), atol=0.25, rtol=0)


def test_assert_close_applies_atol_exactly_not_rounded_to_the_expected_dtype():
    """The tolerance is computed in float64: a float32 expected value must not round atol=1e-5 down to
    float32's 9.99999974738e-06, which would reject an error of 9.9999999e-06 <= atol."""
    e = torch.tensor([1.0], dtype=torch.float32)
    a = torch.tensor([1.0 + 9.9999999e-06], dtype=torch.float64)
    assert float(torch.tensor(1e-5, dtype=torch.float32)) < 9.9999999e-06 < 1e-5  # the gap the test relies on
    checks.assert_close(a, e, atol=1e-5, rtol=0)
    with pytest.raises(AssertionError, match="differs"):
        checks.assert_close(a + 1e-9, e, atol=1e-5, rtol=0)  # 1.00999e-05 > atol


def test_assert_close_compares_bool_and_integer_answers_by_value():
    """A student's 0/1 mask or integer counts are compared as numbers (bool - float is an error in torch)."""
    checks.assert_close(torch.tensor([True, False, True]), torch.tensor([1.0, 0.0, 1.0]))
    checks.assert_close(torch.tensor([3, 4]), torch.tensor([3.0, 4.0]))
    with pytest.raises(AssertionError, match=r"at \[1\] \(got 0, expected 1;"):
        checks.assert_close(torch.tensor([True, False]), torch.tensor([1.0, 1.0]))


def test_default_names_in_messages_are_value():
    """Called without ``name``, every check calls the thing "value" (what the student reads)."""
    with pytest.raises(AssertionError, match=r"^value differs: max abs error 1 at \[0\]"):
        checks.assert_close(torch.tensor([1.0]), torch.tensor([2.0]))
    with pytest.raises(AssertionError, match=r"^value has shape \(2,\), expected \(3,\)$"):
        checks.assert_shape(torch.zeros(2), (3,))
    with pytest.raises(AssertionError, match=r"^value has 1 NaN/inf entries out of 2$"):
        checks.assert_finite(torch.tensor([0.0, math.nan]))


def test_assert_close_names_the_missing_expected_value():
    with pytest.raises(AssertionError, match=r"^expected logits is None: the function returned nothing"):
        checks.assert_close(torch.zeros(2), None, name="logits")
    with pytest.raises(AssertionError, match=r"^expected value is Ellipsis"):
        checks.assert_close(torch.zeros(2), ...)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_assert_close_compares_a_gpu_answer_with_a_cpu_reference():
    """Both sides move to the CPU: a student's CUDA tensor against a CPU reference, and the other way."""
    a = torch.tensor([1.0, 2.0])
    checks.assert_close(a.cuda(), a)
    checks.assert_close(a, a.cuda())
    with pytest.raises(AssertionError, match="differs"):
        checks.assert_close(a.cuda() + 1, a)


# ----------------------------------------------------------------------------- assert_episode messages


def test_assert_episode_drawing_in_support_and_query_message():
    imgs = _images()
    t = _episode(imgs)  # label 0: class 1, drawing 0 in support, 1 and 2 in query
    xq = t.x_query.clone()
    xq[0] = t.x_support[0]
    with pytest.raises(AssertionError, match=r"^a drawing appears in both the support and the query set: "
                                             r"D\^tr and D\^ts must be disjoint$"):
        checks.assert_episode(t._replace(x_query=xq), imgs, 2, 1, 2)


def test_assert_episode_drawing_twice_in_one_set_message():
    imgs = _images()
    t = _episode(imgs)
    xq = t.x_query.clone()
    xq[1] = xq[0]
    with pytest.raises(AssertionError, match=r"^a drawing appears twice in one set: sample drawings without replacement$"):
        checks.assert_episode(t._replace(x_query=xq), imgs, 2, 1, 2)
