"""Shared stand-ins for the judges' mutation tests (tests/test_mutants_grading*.py): a scripted and a recording
``random.Random``, the exact-message failure check, and class means by plain loops."""
from __future__ import annotations

import random

import pytest
import torch


class ScriptedRng:
    """A random.Random stand-in: returns the given values in turn and records every call."""

    def __init__(self, *values):
        self.values, self.calls = list(values), []

    def _next(self, name, *args):
        self.calls.append((name, *args))
        return self.values.pop(0)

    def randint(self, a, b):
        return self._next("randint", a, b)

    def uniform(self, a, b):
        return self._next("uniform", a, b)

    def gauss(self, mu, sigma):
        return self._next("gauss", mu, sigma)

    def randrange(self, n):
        return self._next("randrange", n)


class RecordingRng:
    """random.Random(seed) that records each call: (method, *arguments, value)."""

    def __init__(self, seed):
        self.rng, self.calls = random.Random(seed), []

    def _call(self, name, *args):
        v = getattr(self.rng, name)(*args)
        self.calls.append((name, *args, v))
        return v

    def randint(self, a, b):
        return self._call("randint", a, b)

    def uniform(self, a, b):
        return self._call("uniform", a, b)

    def randrange(self, n):
        return self._call("randrange", n)

    def choice(self, seq):
        return self._call("choice", seq)


def fails(check, got, expected, message):
    """``check(got, expected)`` raises AssertionError with exactly ``message``."""
    with pytest.raises(AssertionError) as err:
        check(got, expected)
    assert str(err.value) == message, str(err.value)


def loop_class_means(z, y, n):
    """Per-task class means of ``z`` (B, M, D) under labels ``y`` (B, M), one row at a time, in float64: (B, n, D)."""
    out = torch.zeros(z.shape[0], n, z.shape[2], dtype=torch.float64)
    for b in range(z.shape[0]):
        for k in range(n):
            rows = [z[b, i].double() for i in range(z.shape[1]) if int(y[b, i]) == k]
            out[b, k] = sum(rows) / len(rows)
    return out
