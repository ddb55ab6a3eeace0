"""Class splits of Omniglot: Vinyals (published lists), Lake (background/evaluation), random.

* ``vinyals``: the class lists of Vinyals et al. (2016) as published with Prototypical Networks
  (Snell et al. 2017; MIT licence, ``metalib/data/vinyals/SOURCE.txt``): ``train`` 1028, ``val``
  172, ``test`` 423 characters (``trainval`` = train + val = 1200), each in all four rotations
  (0/90/180/270 degrees, each its own class: 4112 / 688 / 1692 / 4800 classes). This is the split
  MAML, ProtoNets and Matching Nets report on. It is nearly alphabet-disjoint: train draws on 33
  alphabets, test on 13, and only one alphabet has characters on both sides. The lists are read
  from ``<METALIB_DATA>/omniglot/splits/vinyals/`` when that folder exists, else from the copy
  shipped inside the package; either must match the published sha256.
* ``lake``: the background set's 30 alphabets for meta-training (``RandomState(0)`` picks 5 of
  them as ``val``, the other 25 are ``train``; ``trainval`` is all 30) and the evaluation set's
  20 alphabets as ``test``: no alphabet is shared between meta-train and meta-test. No rotations
  by default. (Lake et al.'s *official* one-shot benchmark is a fixed set of 20 runs:
  `metalib.data.lake_runs`.)
* ``random``: the course's earlier stand-in, kept only so that the two checkpoints trained with it
  on a lent GPU stay honestly labelled: the 1623 characters in cache order permuted by
  ``numpy.random.RandomState(0).permutation(1623)``; first 1028 ``train``, next 172 ``val``,
  last 423 ``test``, with rotations. All 50 alphabets fall on both sides, so it is an easier test
  than the published split and not comparable with the papers.

Taught in notebook 01 (meta-train vs meta-test classes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .omniglot import Omniglot, OmniglotError, data_root

__all__ = ["ClassSplit", "omniglot_split", "split_characters", "vinyals_classes", "SPLITS", "PARTS"]

SPLITS = ("vinyals", "lake", "random")
PARTS = ("train", "val", "trainval", "test")
VINYALS_TRAIN, VINYALS_TRAINVAL = 1028, 1200
LAKE_VAL_ALPHABETS = 5
#: sha256 of the published Vinyals class lists (jakesnell/prototypical-networks, c9bb4d2)
VINYALS_SHA256 = {
    "train": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "test": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "trainval": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
}
_PACKAGED = Path(__file__).resolve().parent / "vinyals"


def _vinyals_file(part: str) -> Path:
    """The list file of ``part``: ``<data root>/omniglot/splits/vinyals/`` first, else the packaged copy."""
    for folder in (data_root() / "omniglot" / "splits" / "vinyals", data_root() / "splits" / "vinyals", _PACKAGED):
        if (folder / f"{part}.txt").is_file():
            return folder / f"{part}.txt"
    raise OmniglotError(f"the Vinyals class list {part}.txt is missing (looked under {data_root()} and {_PACKAGED}); "
                        "reinstall metalib or copy splits/vinyals/ from jakesnell/prototypical-networks")


@lru_cache(maxsize=None)
def vinyals_classes(part: str) -> tuple[str, ...]:
    """The published Vinyals class names of ``part`` ("Alphabet/characterNN/rot090"), checksum-verified."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")
    path = _vinyals_file(part)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != VINYALS_SHA256[part]:
        raise OmniglotError(f"{path} does not match the published Vinyals list (sha256 differs); "
                            "restore it from jakesnell/prototypical-networks, data/omniglot/splits/vinyals/")
    return tuple(data.decode().split())


def _vinyals_characters(data: Omniglot, part: str) -> np.ndarray:
    """Cache indices of the characters listed in ``part`` (each listed with all four rotations)."""
    index = {name: i for i, name in enumerate(data.char_names)}
    chars, missing = set(), []
    for cls in vinyals_classes(part):
        name = cls.rsplit("/", 1)[0]  # drop "/rotNNN": every character is listed in all four
        if name not in index:
            missing.append(name)
        else:
            chars.add(index[name])
    if missing:
        raise OmniglotError(f"{len(missing)} characters of the Vinyals {part} list are not in the Omniglot images "
                            f"(first: {missing[0]}); the zips are incomplete: run `python -m metalib download omniglot`")
    return np.sort(np.fromiter(chars, dtype=np.int64))


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
        return torch.from_numpy(_vinyals_characters(data, part))
    if split == "random":
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
        split: "vinyals" (the published lists), "lake" or "random" (see the module docstring).
        part: "train", "val", "trainval" or "test".
        rotations: add 90/180/270-degree rotated copies as new classes; default True for
            vinyals and random, False for lake.
        device: where the images live (default CPU); sample episodes on the same device.

    Returns:
        A `ClassSplit`.
    """
    chars = split_characters(data, split, part)
    images = data.images[chars]  # (C, 20, 28, 28)
    names = [data.char_names[i] for i in chars.tolist()]
    if rotations if rotations is not None else split != "lake":
        images = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])  # (4C, 20, 28, 28)
        names = [n if k == 0 else f"{n}/rot{90 * k}" for k in range(4) for n in names]
        chars = chars.repeat(4)
    return ClassSplit(images=images.contiguous().to(device or "cpu"), class_names=tuple(names),
                      char_index=chars, name=f"{split}/{part}")
