"""Class splits of Omniglot: Vinyals (1028 train / 172 val / 423 test characters) and Lake.

* ``vinyals``: the 1623 characters in cache order (sorted by set, alphabet, character) are
  permuted by ``numpy.random.RandomState(0).permutation(1623)`` (NumPy's frozen legacy stream,
  so the order never changes); the first 1200 are meta-training (the first 1028 of them
  ``train``, the next 172 ``val``, as in Snell et al.'s use of the Vinyals split) and the last
  423 are ``test``. ``trainval`` is all 1200. Each character rotated by 0/90/180/270 degrees
  is its own class (x4), as in Vinyals et al. 2016, MAML and ProtoNets. Vinyals' original
  list files are not public in full, so this is a fixed, documented split of the same sizes.
* ``lake``: the background set's 30 alphabets for meta-training (``RandomState(0)`` picks 5 of
  them as ``val``, the other 25 are ``train``; ``trainval`` is all 30) and the evaluation set's
  20 alphabets as ``test``: no alphabet is shared between meta-train and meta-test. No rotations
  by default.

Taught in notebook 01 (meta-train vs meta-test classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .omniglot import Omniglot

__all__ = ["ClassSplit", "omniglot_split", "split_characters", "SPLITS", "PARTS"]

SPLITS = ("vinyals", "lake")
PARTS = ("train", "val", "trainval", "test")
VINYALS_TRAIN, VINYALS_TRAINVAL = 1028, 1200
LAKE_VAL_ALPHABETS = 5


@dataclass(frozen=True)
class ClassSplit:
    """The images of one split, one row per class, ready for on-device episode sampling.

    Attributes:
        images: uint8 (C, 20, 28, 28) on the device; ink = 255.
        class_names: C names, "Alphabet/characterNN" plus "/rot90" etc. for rotated classes.
        char_index: int64 (C,) the character (row of ``Omniglot.images``) each class comes from.
        name: e.g. "vinyals/train".
    """
    images: torch.Tensor
    class_names: tuple[str, ...]
    char_index: torch.Tensor
    name: str

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    @property
    def n_per_class(self) -> int:
        return self.images.shape[1]

    @property
    def device(self) -> torch.device:
        return self.images.device


def split_characters(data: Omniglot, split: str, part: str) -> torch.Tensor:
    """Indices (into ``data.images``) of the characters in ``split``/``part``, sorted."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")
    n = data.n_chars
    if split == "vinyals":
        perm = np.random.RandomState(0).permutation(n)
        cut = {"train": perm[:VINYALS_TRAIN], "val": perm[VINYALS_TRAIN:VINYALS_TRAINVAL],
               "trainval": perm[:VINYALS_TRAINVAL], "test": perm[VINYALS_TRAINVAL:]}[part]
        return torch.from_numpy(np.sort(cut))
    background = data.background.numpy()
    if part == "test":
        return torch.from_numpy(np.flatnonzero(~background))
    bg_alphabets = np.unique(data.alphabet.numpy()[background])
    val_alphabets = np.sort(np.random.RandomState(0).permutation(bg_alphabets)[:LAKE_VAL_ALPHABETS])
    in_val = np.isin(data.alphabet.numpy(), val_alphabets) & background
    mask = {"train": background & ~in_val, "val": in_val, "trainval": background}[part]
    return torch.from_numpy(np.flatnonzero(mask))


def omniglot_split(data: Omniglot, split: str = "vinyals", part: str = "train", *,
                   rotations: bool | None = None, device: str | torch.device | None = None) -> ClassSplit:
    """Select a split and move its images to the device once.

    Args:
        data: from `metalib.data.load_omniglot`.
        split: "vinyals" or "lake".
        part: "train", "val", "trainval" or "test".
        rotations: add 90/180/270-degree rotated copies as new classes; default True for
            vinyals, False for lake.
        device: where the images live (default CPU); sample episodes on the same device.

    Returns:
        A `ClassSplit`.
    """
    chars = split_characters(data, split, part)
    images = data.images[chars]  # (C, 20, 28, 28)
    names = [data.char_names[i] for i in chars.tolist()]
    if rotations if rotations is not None else split == "vinyals":
        images = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])  # (4C, 20, 28, 28)
        names = [n if k == 0 else f"{n}/rot{90 * k}" for k in range(4) for n in names]
        chars = chars.repeat(4)
    return ClassSplit(images=images.contiguous().to(device or "cpu"), class_names=tuple(names),
                      char_index=chars, name=f"{split}/{part}")
