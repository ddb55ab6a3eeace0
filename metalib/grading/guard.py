"""References a notebook uses itself: available while it runs, unavailable while its answers are checked.

Notebooks 02, 04, 05, 07, 08 and 09 run the library's reference of an exercise in their own experiments
(05 trains with `metalib.maml.adapt`, 07 plays with `metalib.rl.rl2.rollout`, ...), so the grader cannot
replace those functions by a raise the way it hides 06's (`judge.stub_source`). Instead, in the grader's
copy of the library, each of them starts with one line (`guard_source`) that asks this module whether
the answers are being checked. The runner switches checking on (`begin_checks`) before its first
probe, so an answer that reaches the reference by any route (an import, ``importlib``, ``sys.modules``,
a helper defined elsewhere, ``inspect.getsource`` + ``exec`` of the guarded source) raises "... is not
available while grading" and the grader flags it and scores the question 0.

What it does not stop: the switch lives in the student's process, so a submission that reads this
module and switches checking off again, or pastes the library's source from elsewhere, is not stopped
by it; docs/GRADING.md says so.
"""
from __future__ import annotations

import ast
from typing import Callable

from . import pyast

__all__ = ["begin_checks", "check", "guard_source", "rewrite_functions", "MESSAGE"]

MESSAGE = "is not available while grading: write your own implementation"   # = judge.NOT_AVAILABLE
_state = {"checking": False}


def begin_checks() -> None:
    """From now on (in this process), every guarded reference raises."""
    _state["checking"] = True


def check(name: str) -> None:
    """The first line of a guarded reference: raise while the answers are checked."""
    if _state["checking"]:
        raise NotImplementedError(f"{name} {MESSAGE}")


def rewrite_functions(source: str, names: tuple[str, ...], module: str, verb: str,
                      edit: Callable[[ast.FunctionDef, list[str]], None]) -> str:
    """``source`` after ``edit(node, lines)`` on each top-level function of ``names`` (last one first, so
    that line numbers stay valid); ``verb`` ("hidden", "guarded") words the errors."""
    tree = pyast.parse(source)
    lines = source.splitlines(keepends=True)
    found = set()
    for node in sorted((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and n.name in names), key=lambda n: n.lineno, reverse=True):
        found.add(node.name)
        if node.body[0].lineno == node.lineno:
            raise ValueError(f"{module}.{node.name}: a one-line function cannot be {verb}; give it a body")
        edit(node, lines)
    missing = set(names) - found
    if missing:
        raise ValueError(f"{module} defines no top-level function(s) {sorted(missing)} to be {verb} while grading")
    return "".join(lines)


def guard_source(source: str, names: tuple[str, ...], module: str) -> str:
    """``source`` with a guard line (`check`) at the top of the top-level functions ``names``
    (after the docstring, so that the function keeps it)."""
    def edit(node, lines):
        body = node.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str)
        first = body[1] if has_doc and len(body) > 1 else body[0]
        at = body[0].end_lineno if has_doc else body[0].lineno - 1   # insert after this many lines
        check_call = f'__import__("metalib.grading.guard", fromlist=["check"]).check({module + "." + node.name!r})'
        lines[at:at] = [" " * first.col_offset + check_call + "\n"]

    return rewrite_functions(source, names, module, "guarded", edit)
