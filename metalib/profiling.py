"""Measure what a computation costs: wall time and the peak memory of the tensors it creates.

``torch.cuda.max_memory_allocated`` answers "how much memory at most?" on a GPU, but the CPU has
no such counter. `MemoryTracker` works on every device: it watches every tensor the operators
inside a ``with`` block create (through a ``TorchDispatchMode``) and counts the bytes of those
still alive, including the ones autograd keeps for the backward pass. Its ``peak`` is the largest
number of extra bytes alive at once; ``largest`` is the element count of the biggest tensor
created, which is how notebook 06 proves that a Hessian-vector-product solution never builds an
n × n matrix. Tensors that existed before the block are not counted.

Used by notebook 06 (time and memory of the four MAML-gradient methods) and benchmarks/.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["MemoryTracker", "Cost", "measure"]


class MemoryTracker(TorchDispatchMode):
    """Context manager: peak bytes and largest tensor created by the operators run inside it.

    Attributes (read after the block):
        peak: the most bytes of tensor storage alive at once, counting storages created inside.
        current: bytes of storages created inside and still alive.
        largest: number of elements of the largest tensor any operator produced.

    Storages are keyed by their data pointer and released when the last tensor using them is
    freed, so views and in-place results are not counted twice. Under ``torch.func`` transforms
    the wrapped tensors are skipped and the physical (batched) tensors are counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0
        self.current = 0
        self.largest = 0
        self._bytes: dict[int, int] = {}
        self._users: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._users[key] -= 1
        if self._users[key] == 0:
            self.current -= self._bytes.pop(key)
            del self._users[key]

    def _track(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
        except (RuntimeError, NotImplementedError):  # functorch wrapper: its physical tensor is seen too
            return
        self.largest = max(self.largest, t.numel())
        if key == 0:
            return
        if key not in self._bytes:
            self._bytes[key], self._users[key] = storage.nbytes(), 0
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self._users[key] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


@dataclass(frozen=True)
class Cost:
    """What one call cost: ``seconds`` (best of the repeats) and ``peak_bytes`` (MemoryTracker)."""
    seconds: float
    peak_bytes: int
    largest_tensor: int
    result: Any = None

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def measure(fn: Callable[[], Any], *, repeats: int = 3) -> Cost:
    """Time ``fn()`` (best of ``repeats`` runs, without tracking) and measure its memory once.

    Timing and memory are separate runs because the tracker's bookkeeping slows every operator.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    with MemoryTracker() as tracker:
        fn()
    return Cost(best, tracker.peak, tracker.largest, result)
