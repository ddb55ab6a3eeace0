"""A second domain for meta-testing: scikit-learn's bundled handwritten digits, shaped like Omniglot.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1,797 images of 8x8 pixels,
grey levels 0-16, of the digits 0-9 written by 43 people (the UCI "Optical Recognition of Handwritten
Digits" test set). `digits_split` resizes them (bilinear) to 20x20 inside a 4-pixel empty margin, so
28x28 like Omniglot's characters (and MNIST's digits), and scales them to uint8 with ink = 255 on a
background of 0, like the Omniglot cache, and returns a `ClassSplit` with
one row per digit, so `EpisodeSampler` and every evaluator draw 5-way or 10-way tasks from it
unchanged. Blurry, low-resolution, ten classes written by other hands: a domain shift for a learner
meta-trained on Omniglot characters (notebook 09).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .splits import ClassSplit

__all__ = ["digits_split", "DIGITS_PER_CLASS"]

#: images per class kept (the smallest class, "8", has 174): the first 174 of each digit in file order
DIGITS_PER_CLASS = 174


def digits_split(size: int = 28, *, margin: int = 4, per_class: int = DIGITS_PER_CLASS,
                 device: str | torch.device | None = None) -> ClassSplit:
    """The 10 digit classes as a `ClassSplit`: uint8 images (10, per_class, size, size), ink = 255.

    Args:
        size: image side (28 as Omniglot's cache); margin: empty pixels on each side (the digit fills
            the inner (size - 2 margin) square, as the 8x8 originals fill their frame).
        per_class: drawings kept per digit, the first ones in the data set's order (at most 174).
        device: where the images live.

    Raises:
        ImportError: scikit-learn is missing (``pip install scikit-learn``).
        ValueError: ``per_class`` outside 1..174, or no room inside the margin.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the digits domain needs scikit-learn, which ships the data: pip install scikit-learn") from err
    inner = size - 2 * margin
    if inner < 1 or margin < 0:
        raise ValueError(f"margin={margin} leaves no room for the digit in a {size}x{size} image")
    if not 1 <= per_class <= DIGITS_PER_CLASS:
        raise ValueError(f"per_class must lie in 1..{DIGITS_PER_CLASS} (the smallest digit class), got {per_class}")
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1], ink high
    target = torch.as_tensor(bunch.target)
    rows = torch.stack([torch.nonzero(target == d).flatten()[:per_class] for d in range(10)])  # (10, per_class)
    big = F.interpolate(images[rows.flatten()].unsqueeze(1), size=(inner, inner), mode="bilinear", align_corners=False)
    big = F.pad(big, (margin,) * 4)  # (n, 1, size, size), background 0
    big = (big.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).reshape(10, per_class, size, size)
    return ClassSplit(images=big.contiguous().to(device or "cpu"), class_names=tuple(f"digit {d}" for d in range(10)),
                      char_index=torch.arange(10), name="digits")
