"""Device choice and seeding.

`get_device()` picks cuda > mps > cpu; the environment variable ``METALIB_DEVICE`` (e.g.
``cpu`` or ``cuda:1``) overrides it. `seed_everything(seed)` seeds Python, NumPy and torch for
notebooks; library code never relies on global seeds and takes a ``torch.Generator`` instead.

Taught in notebook 00 (welcome).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "make_generator"]


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        prefer: an explicit device; otherwise ``METALIB_DEVICE``; otherwise cuda > mps > cpu.

    Returns:
        A ``torch.device``.

    Raises:
        ValueError: when the requested device is not available on this machine.
    """
    choice = prefer if prefer is not None else os.environ.get("METALIB_DEVICE")
    if choice is None or str(choice) == "":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise ValueError(f"METALIB_DEVICE={choice!r} is not a device name; use cpu, cuda, cuda:0 or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} was requested but CUDA is not available here; unset METALIB_DEVICE or use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {choice!r} was requested but MPS is not available here; unset METALIB_DEVICE or use cpu")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (for notebooks).

    Args:
        seed: any integer.

    Returns:
        A fresh CPU ``torch.Generator`` seeded with ``seed``, to pass to samplers explicitly.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
