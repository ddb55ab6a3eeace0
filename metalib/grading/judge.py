"""Checks outside the student's process: probes go in, plain data comes out, the judge compares.

A `Probe` is a few lines of instructor code that end by setting ``result``: it builds inputs and
calls the student's answer functions, e.g. ``prob = p1.quadratic_problem(n=4, seed=0)`` then
``result = inner_step_jacobian(prob.inner, prob.theta0, 0.3)``. The same code runs twice:

* in the sandbox (`metalib.grading.runner`), with the student's functions; ``result`` is saved with
  ``torch.save`` (tensors, numbers, lists and dicts of them);
* in the grader's own process, with the `Judge`'s *references* bound to the same names, which gives
  the expected value. The student's output is loaded with ``torch.load(weights_only=True)`` (no
  pickled code, no tensor subclasses) and compared there with `metalib.checks`.

Nothing the student's code patches (``checks``, ``math.isclose``, ``json.dump``, ``exec``, input
transformers, tensor subclasses) reaches the comparison, and the hidden probes' inputs are drawn when
grading starts (`Judge.probes(rng)`), so no table of outputs can anticipate them. A probe may also
return a measurement (the largest tensor a call created); its ``check`` decides outside the sandbox.
While grading, the library functions listed in ``Judge.unavailable`` raise "not available while
grading" in the sandbox (`stub_source`), however they are reached; those in ``Judge.guarded`` (references
the notebook's own experiments use) raise so only while the probes run (`guard.guard_source`).
"""
from __future__ import annotations

import importlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from metalib.grading.guard import MESSAGE, rewrite_functions

__all__ = ["Probe", "Judge", "judge_for", "expected_value", "compare", "load_output", "stub_source",
           "NOT_AVAILABLE", "JUDGES"]

NOT_AVAILABLE = MESSAGE   # what a hidden or guarded reference raises while grading
MAX_OUTPUT_BYTES = 64 * 2**20

# assignment (master stem) -> "module:attribute" of its Judge; assignments not listed run Otter's
# test cells in the student's kernel (see docs/GRADING.md)
JUDGES = {"00_welcome": "metalib.grading.judges.welcome:JUDGE",
          "01_supervised_meta_learning": "metalib.grading.judges.supervised:JUDGE",
          "02_black_box": "metalib.grading.judges.black_box:JUDGE",
          "03_matching_networks": "metalib.grading.judges.matching:JUDGE",
          "04_prototypical_networks": "metalib.grading.judges.protonet:JUDGE",
          "05_maml": "metalib.grading.judges.maml:JUDGE",
          "06_maml_gradient": "metalib.grading.judges.maml_gradient:JUDGE",
          "07_meta_rl_rl2": "metalib.grading.judges.rl2:JUDGE",
          "08_maml_rl": "metalib.grading.judges.maml_rl:JUDGE",
          "09_choosing_a_meta_learner": "metalib.grading.judges.choosing:JUDGE"}


@dataclass(frozen=True)
class Probe:
    question: str
    name: str
    hidden: bool
    code: str                                   # sets ``result``; sees ``torch`` and the answer functions
    check: Callable[[Any, Any], None] | None = None   # (got, expected) -> raises AssertionError; default `compare`
    atol: float = 1e-10
    rtol: float = 1e-8


@dataclass(frozen=True)
class Judge:
    assignment: str
    make_probes: Callable[[random.Random], list[Probe]]  # hidden inputs drawn from the generator
    references: Callable[[], dict[str, Callable]]        # answer name -> trusted implementation
    unavailable: dict[str, tuple[str, ...]] = field(default_factory=dict)  # module -> reference names
    # references the notebook itself calls: they work while it runs and raise while the probes run
    guarded: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def probes(self, rng: random.Random) -> list[Probe]:
        probes = self.make_probes(rng)
        ids = [p.name for p in probes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.assignment}: probe names must be unique: {ids}")
        return probes


def judge_for(assignment: str) -> Judge | None:
    """The assignment's `Judge`, or None when its tests still run in the student's kernel."""
    target = JUDGES.get(assignment)
    if target is None:
        return None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def expected_value(probe: Probe, references: dict[str, Callable]) -> Any:
    """Run the probe's code in this (trusted) process with the reference implementations."""
    import torch

    ns: dict[str, Any] = {"torch": torch, **references}
    exec(compile(probe.code, f"<reference {probe.name}>", "exec"), ns)
    return ns["result"]


def load_output(path: Path) -> Any:
    """A probe's output, as plain data only (raises ValueError saying why not)."""
    import torch

    if path.stat().st_size > MAX_OUTPUT_BYTES:
        raise ValueError(f"the output is larger than {MAX_OUTPUT_BYTES // 2**20} MiB")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ValueError("the answer returned something that is not plain data (a tensor, a number, or "
                         f"lists/dicts of them): {type(err).__name__}: {str(err)[:200]}") from None


def compare(got: Any, expected: Any, *, name: str = "result", atol: float = 1e-10, rtol: float = 1e-8) -> None:
    """Raise AssertionError unless ``got`` has ``expected``'s structure and values (tensors within
    tolerance, exact type: a tensor must be a plain ``torch.Tensor``)."""
    import torch

    from .. import checks

    if isinstance(expected, torch.Tensor):
        if type(got) is not torch.Tensor:
            raise AssertionError(f"{name}: expected a tensor, got {type(got).__name__}")
        if got.is_complex() or got.dtype == torch.bool:
            raise AssertionError(f"{name}: expected a real floating-point tensor, got {got.dtype}")
        checks.assert_shape(got, tuple(expected.shape), name)
        checks.assert_close(got.to(expected.dtype), expected, name=name, atol=atol, rtol=rtol)
    elif isinstance(expected, bool) or expected is None:
        if got is not expected:
            raise AssertionError(f"{name}: expected {expected!r}, got {got!r}"[:300])
    elif isinstance(expected, (int, float)):
        if type(got) not in (int, float) or not math.isfinite(got) or \
                not math.isclose(got, expected, rel_tol=max(rtol, 1e-12), abs_tol=atol):
            raise AssertionError(f"{name}: expected {expected!r}, got {got!r}"[:300])
    elif isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise AssertionError(f"{name}: expected a sequence of {len(expected)}, got {type(got).__name__}")
        for i, (g, e) in enumerate(zip(got, expected)):
            compare(g, e, name=f"{name}[{i}]", atol=atol, rtol=rtol)
    elif isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            raise AssertionError(f"{name}: expected keys {sorted(expected)}")
        for key in expected:
            compare(got[key], expected[key], name=f"{name}[{key!r}]", atol=atol, rtol=rtol)
    else:
        raise TypeError(f"{name}: cannot compare expected values of type {type(expected).__name__}")


def stub_source(source: str, names: tuple[str, ...], module: str) -> str:
    """``source`` with the bodies of the top-level functions ``names`` replaced by a raise."""
    def edit(node, lines):
        first = node.body[0]
        message = f"{module}.{node.name} {NOT_AVAILABLE}"
        lines[first.lineno - 1:node.end_lineno] = [f"{' ' * first.col_offset}raise NotImplementedError({message!r})\n"]

    return rewrite_functions(source, names, module, "hidden", edit)
