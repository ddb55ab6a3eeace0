"""Random affine distortions of character images (Koch, Zemel & Salakhutdinov 2015, section 4.3).

Koch et al. reach 92% on Lake et al.'s 20 one-shot runs (20-way, within one alphabet) partly by training on
distorted copies of the background drawings: each of rotation, shear, scale and translation is applied
with probability 1/2, with θ ∈ [-10°, 10°], shear ρ ∈ [-0.3, 0.3], scale s ∈ [0.8, 1.2] and translation
t ∈ [-2, 2] pixels (per axis, for 105x105 images; scaled with the image size). `random_affine` samples one such
transform per image from an explicit ``torch.Generator`` and applies it with ``grid_sample`` on the images'
device; `augment_task` distorts every support and query image of a meta-batch.

Used by `metalib.metric_train` (``MetricConfig.augment``, the ``protonet_lake_*`` experiments of notebook 04).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .tasks import Task

__all__ = ["AffineRanges", "KOCH", "affine_matrices", "warp", "random_affine", "augment_task"]


@dataclass(frozen=True)
class AffineRanges:
    """Bounds of each distortion and the probability that it is applied (independently per image)."""
    rotation_deg: float = 10.0
    shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 2.0 / 105  # fraction of the image side: Koch et al.'s ±2 px at 105x105, whatever the size
    p: float = 0.5


KOCH = AffineRanges()


def affine_matrices(rotation: torch.Tensor, shear: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
                    ) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in ``affine_grid``'s [-1, 1] frame.

    Args: rotation (n,) radians; shear (n, 2) (x, y); scale (n, 2) (x, y); shift (n, 2) in the [-1, 1] frame.
    The forward transform is T = R(θ) · Shear(ρ) · diag(s); ``grid_sample`` needs its inverse.
    """
    n = rotation.shape[0]
    c, s = torch.cos(rotation), torch.sin(rotation)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    ones = torch.ones_like(rotation)
    Sh = torch.stack([torch.stack([ones, shear[:, 0]], -1), torch.stack([shear[:, 1], ones], -1)], -2)  # (n, 2, 2)
    f = R @ Sh @ torch.diag_embed(scale)  # (n, 2, 2)
    det = (f[:, 0, 0] * f[:, 1, 1] - f[:, 0, 1] * f[:, 1, 0]).view(n, 1, 1)  # |ρxρy| < 1: never 0
    inverse = torch.stack([torch.stack([f[:, 1, 1], -f[:, 0, 1]], -1),
                           torch.stack([-f[:, 1, 0], f[:, 0, 0]], -1)], -2) / det  # closed-form 2x2 inverse
    return torch.cat([inverse, -(inverse @ shift.view(n, 2, 1))], dim=2)  # (n, 2, 3): x_in = A⁻¹(x_out - t)


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Apply (n, 2, 3) ``affine_matrices`` to float images (n, C, H, W); outside the image is 0 (no ink)."""
    grid = F.affine_grid(matrices.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(images: torch.Tensor, generator: torch.Generator, ranges: AffineRanges = KOCH) -> torch.Tensor:
    """One random distortion per image of a float batch (..., C, H, W), sampled from ``generator``.

    The generator must live on the images' device (as `metalib.EpisodeSampler`'s does); the same
    generator state gives the same distortions.
    """
    if images.dim() < 3 or not images.is_floating_point():
        raise ValueError(f"random_affine needs float images (..., C, H, W), got {images.dtype} {tuple(images.shape)}")
    if generator.device != images.device:
        raise ValueError(f"the generator is on {generator.device} but the images on {images.device}: "
                         "create the generator on the images' device")
    flat = images.reshape(-1, *images.shape[-3:])  # (n, C, H, W)
    n, dev = flat.shape[0], flat.device

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator, device=dev) * (high - low) + low

    def on(shape):  # each distortion is applied with probability p
        return (torch.rand(shape, generator=generator, device=dev) < ranges.p).float()

    a = math.radians(ranges.rotation_deg)
    rotation = uniform((n,), -a, a) * on((n,))
    shear = uniform((n, 2), -ranges.shear, ranges.shear) * on((n, 1))
    scale = 1 + (uniform((n, 2), *ranges.scale) - 1) * on((n, 1))
    shift = uniform((n, 2), -ranges.translate, ranges.translate) * 2 * on((n, 1))  # the [-1, 1] frame is 2 wide
    return warp(flat, affine_matrices(rotation, shear, scale, shift)).reshape(images.shape)


def augment_task(task: Task, generator: torch.Generator, ranges: AffineRanges = KOCH) -> Task:
    """The meta-batch with every support and query image distorted independently; labels unchanged."""
    return task._replace(x_support=random_affine(task.x_support, generator, ranges),
                         x_query=random_affine(task.x_query, generator, ranges))
