"""`metalib.grading.guard`: references that notebooks 05, 07, 08 and 09 use themselves work while the
notebook runs and raise, by whatever route they are reached, once the probes run. (The real grader,
sandbox included, is exercised on every such notebook in tests/test_judges.py.)"""
from __future__ import annotations

import importlib
import inspect
import sys

import pytest

from metalib.grading import guard
from metalib.grading.judge import JUDGES, NOT_AVAILABLE, judge_for

GUARDED = sorted(n for n in JUDGES if judge_for(n).guarded)


@pytest.fixture
def guarded_maml(monkeypatch):
    """metalib.maml as the grader's copy has it (adapt and sgd_step guarded), as module `metalib._maml_guarded`."""
    import types

    import metalib.maml as maml

    src = guard.guard_source(inspect.getsource(maml), ("adapt", "sgd_step"), "metalib.maml")
    module = types.ModuleType("metalib._maml_guarded")
    module.__package__ = "metalib"
    exec(compile(src, "maml_guarded.py", "exec"), vars(module))
    module.source = src
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(guard._state, "checking", False)
    return module


def _function_source(module, name: str) -> str:
    """What ``inspect.getsource`` of the grader's copy shows a student: the function, guard line included."""
    import ast

    node = next(n for n in ast.parse(module.source).body if getattr(n, "name", None) == name)
    return ast.get_source_segment(module.source, node)


def _step_inputs():
    import torch
    return {"w": torch.ones(2)}, {"w": torch.full((2,), 0.5)}


def test_guarded_reference_works_until_the_checks_begin(guarded_maml):
    import torch

    params, grads = _step_inputs()
    assert torch.equal(guarded_maml.sgd_step(params, grads, 0.1)["w"], torch.full((2,), 0.95))
    guard.begin_checks()
    for route in (lambda: guarded_maml.sgd_step,
                  lambda: sys.modules["metalib._maml_guarded"].sgd_step,
                  lambda: getattr(importlib.import_module("metalib._maml_guarded"), "sgd_step")):
        with pytest.raises(NotImplementedError, match="metalib.maml.sgd_step " + NOT_AVAILABLE):
            route()(params, grads, 0.1)
    # the guarded source (what inspect.getsource shows), exec'd elsewhere, carries its guard along
    ns: dict = {}
    ns.update(vars(guarded_maml))
    exec(_function_source(guarded_maml, "sgd_step"), ns)
    with pytest.raises(NotImplementedError, match=NOT_AVAILABLE):
        ns["sgd_step"](params, grads, 0.1)


def test_guard_keeps_docstrings_and_signatures(guarded_maml):
    import metalib.maml as maml

    for name in ("adapt", "sgd_step"):
        assert getattr(guarded_maml, name).__doc__ == getattr(maml, name).__doc__
        assert inspect.signature(getattr(guarded_maml, name)) == inspect.signature(getattr(maml, name))


def test_guard_source_refuses_what_it_cannot_guard():
    with pytest.raises(ValueError, match="no top-level function"):
        guard.guard_source("def f():\n    return 1\n", ("g",), "m")
    with pytest.raises(ValueError, match="one-line function cannot be guarded"):
        guard.guard_source("def f(): return 1\n", ("f",), "m")
    src = guard.guard_source('def f():\n    """Doc."""\n\n    return 1\n\n\ndef g():\n    return 2\n', ("f", "g"), "m")
    ns: dict = {}
    exec(src, ns)
    assert ns["f"].__doc__ == "Doc." and ns["f"]() == 1 and ns["g"]() == 2


@pytest.mark.parametrize("name", GUARDED)
def test_every_guarded_reference_exists_and_is_a_reference_of_its_judge(name):
    judge = judge_for(name)
    assert not set(judge.guarded) & set(judge.unavailable)
    for module, names in judge.guarded.items():
        compile(guard.guard_source(inspect.getsource(importlib.import_module(module)), names, module), module, "exec")


def test_probe_cell_begins_the_checks():
    from metalib.grading import runner

    assert runner.PROBE_CELL.index("begin_checks()") < runner.PROBE_CELL.index("for i, (pid, code)")
    assert "begin_checks" not in runner.TEST_CELL and "begin_checks" not in runner.PREAMBLE
