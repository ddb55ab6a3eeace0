"""metalib.augment: Koch et al.'s random affine distortions, checked against exact pixel operations."""
from __future__ import annotations

import math

import pytest
import torch

from metalib import Task
from metalib.augment import AffineRanges, affine_matrices, augment_task, random_affine, warp


def _images(n=3, size=28, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _matrices(n, rotation=0.0, shear=(0.0, 0.0), scale=(1.0, 1.0), shift=(0.0, 0.0)):
    return affine_matrices(torch.full((n,), rotation), torch.tensor([shear] * n), torch.tensor([scale] * n),
                           torch.tensor([shift] * n))


def test_identity_transform_returns_the_images():
    x = _images()
    torch.testing.assert_close(warp(x, _matrices(3)), x, atol=1e-5, rtol=0)  # grid rounding


def test_one_pixel_translation_is_a_shift_with_empty_border():
    x = _images(size=7)
    out = warp(x, _matrices(3, shift=(2 / 7, 0.0)))  # +1 pixel along x (columns)
    torch.testing.assert_close(out[..., 1:], x[..., :-1], atol=1e-6, rtol=0)
    assert out[..., 0].abs().max() < 1e-6  # the column that came from outside holds no ink


def test_quarter_turn_is_rot90():
    x = _images(size=9)
    out = warp(x, _matrices(3, rotation=math.pi / 2))
    torch.testing.assert_close(out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_scale_and_shear_match_the_forward_map():
    """A single ink pixel moves where the forward transform T = R·Shear·diag(s) sends its centre."""
    size, r, c = 21, 7, 13
    x = torch.zeros(1, 1, size, size)
    x[0, 0, r, c] = 1.0
    shear, scale = (0.2, 0.0), (1.0, 1.0)
    out = warp(x, _matrices(1, shear=shear, scale=scale))
    # pixel centre in the [-1, 1] frame (align_corners=False), forward-mapped, back to pixel indices
    px, py = (2 * c + 1) / size - 1, (2 * r + 1) / size - 1
    qx, qy = px + shear[0] * py, py  # Shear = [[1, ρx], [ρy, 1]]
    col, row = ((qx + 1) * size - 1) / 2, ((qy + 1) * size - 1) / 2
    peak = divmod(int(out.flatten().argmax()), size)
    assert peak == (round(row), round(col))
    assert abs(out.sum().item() - 1.0) < 0.05  # bilinear splits the ink, it does not create any


def test_random_affine_is_reproducible_and_distorts():
    x = _images(n=16)
    a = random_affine(x, torch.Generator().manual_seed(3))
    b = random_affine(x, torch.Generator().manual_seed(3))
    c = random_affine(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a - x).flatten(1).abs().amax(1) > 1e-4
    assert 8 <= int(changed.sum()) <= 16  # each of 4 distortions is on with p = 1/2: ~94% of images change
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_probability_zero_is_the_identity():
    x = _images(n=5)
    out = random_affine(x, torch.Generator().manual_seed(0), AffineRanges(p=0.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_random_affine_refuses_bad_input():
    with pytest.raises(ValueError, match="float images"):
        random_affine(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.Generator())
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            random_affine(_images().cuda(), torch.Generator())


def test_augment_task_keeps_shapes_and_labels():
    task = Task(_images(10).view(2, 5, 1, 28, 28), torch.arange(5).repeat(2, 1),
                _images(10, seed=1).view(2, 5, 1, 28, 28), torch.arange(5).repeat(2, 1))
    out = augment_task(task, torch.Generator().manual_seed(0))
    assert out.x_support.shape == task.x_support.shape and out.x_query.shape == task.x_query.shape
    assert out.y_support is task.y_support and out.y_query is task.y_query
    assert not torch.equal(out.x_support, task.x_support)


@pytest.mark.parametrize("size", [28, 56])
def test_translation_range_is_a_fraction_of_the_image_side(size):
    """Only translation, up to 10% of the side: the ink's centre moves at most 0.1 * size pixels per axis."""
    x = torch.zeros(200, 1, size, size)
    x[:, :, size // 2 - 2:size // 2 + 2, size // 2 - 2:size // 2 + 2] = 1.0  # a 4x4 blob in the middle
    ranges = AffineRanges(rotation_deg=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.1, p=1.0)
    out = random_affine(x, torch.Generator().manual_seed(0), ranges)
    grid = torch.arange(size, dtype=torch.float32)
    def centre(im):  # (n, 2) ink centroid (row, col)
        mass = im.sum((-1, -2, -3))
        return torch.stack([(im.sum(-1) * grid).sum((-1, -2)) / mass, (im.sum(-2) * grid).sum((-1, -2)) / mass], -1)
    moved = (centre(out) - centre(x)).abs()
    assert moved.max() <= 0.1 * size + 1e-3
    assert moved.max() > 0.07 * size  # 200 draws of U(-0.1, 0.1) per axis reach close to the bound
