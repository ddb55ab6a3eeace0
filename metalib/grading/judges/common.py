"""Pieces shared by the judges: probe snippets and checks that decide outside the sandbox.

For notebooks 00-04: Probe snippets run in the student's kernel and in the grader's process alike (`metalib.grading.judge`);
they only reduce an answer to plain data (a number, the names in a set, the name of an exception raised)
and record behaviour (which forbidden torch functions were called). The checks (``(got, expected) ->
raises AssertionError``) run in the grader's process only and say what was expected.

For notebooks 05, 07, 08 and 09: ``PLAIN`` is probe code defining ``plain(x)``: tensors detached and copied, containers turned into
dicts and lists, number subclasses (``numpy.float64``) into Python numbers, so that what comes back
from the sandbox loads with ``weights_only``. A prediction question ("return a set of letters")
comes back from `choice_probe` as ``{"set": bool, "items": sorted strings or None, "repr": str}``;
`is_choice` (public) and `right_choice` (hidden) judge it outside, against the reference answer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..judge import compare

NOTHING = ("the function returned nothing. Did you finish the exercise (replace `...`) and `return` "
           "the result?")

# ``_num(v)``: a number as a float (None stays None, anything else: its type's name, for the message);
# ``_names(a)``: {"type": ..., "items": sorted names} of a set answer; ``_raises(f, *a)``: the name of the
# exception ``f(*a)`` raised, or "nothing" when it returned.
HELPERS = '''
def _num(v):
    if v is None or v is Ellipsis:
        return None
    try:
        return float(v)
    except Exception:
        return type(v).__name__

def _names(a):
    if isinstance(a, (set, frozenset)):
        return {"type": "set", "items": sorted(str(x) for x in a)}
    return {"type": type(a).__name__, "items": []}

def _raises(f, *args):
    try:
        f(*args)
    except Exception as err:
        return type(err).__name__
    return "nothing"
'''

# records (does not forbid) calls to the torch functions named in ``_FORBIDDEN``, however spelled
RECORDER = '''
from torch.overrides import TorchFunctionMode as _Mode

class _Recorder(_Mode):
    def __init__(self, names):
        super().__init__()
        self.names, self.called = names, []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.names and name not in self.called:
            self.called.append(name)
        return func(*args, **(kwargs or {}))
'''


def nothing(got: Any, name: str) -> None:
    if got is None:
        raise AssertionError(f"{name} is None: {NOTHING}")


def tensors(name: str, *, atol: float = 1e-5, rtol: float = 1e-5, dtype: bool = False, finite: bool = False,
            skip: tuple[str, ...] = ()) -> Callable[[Any, Any], None]:
    """A check: ``got`` has ``expected``'s structure (dicts, lists of tensors and numbers) and values;
    ``dtype``: each tensor keeps the expected dtype; ``finite``: NaN/inf reported as such first.
    Keys in ``skip`` are inputs echoed by the probe (trusted from ``expected`` only), not compared."""
    def check(got, expected):
        _walk(got, expected, name, atol, rtol, dtype, finite, skip)
    return check


def _walk(got, expected, name, atol, rtol, dtype, finite, skip) -> None:
    import torch

    from ... import checks

    nothing(got, name)
    if isinstance(expected, torch.Tensor):
        if type(got) is not torch.Tensor:
            raise AssertionError(f"{name} should be a tensor, got {type(got).__name__}")
        if finite:
            checks.assert_finite(got, name)
        if dtype and got.dtype != expected.dtype:
            raise AssertionError(f"{name} should keep the dtype {expected.dtype}, got {got.dtype}")
        compare(got, expected, name=name, atol=atol, rtol=rtol)
    elif isinstance(expected, dict):
        if not isinstance(got, dict):
            raise AssertionError(f"{name}: expected keys {sorted(expected)}, got {type(got).__name__}")
        for key in expected:
            if key not in skip:
                _walk(got.get(key), expected[key], f"{name} {key}" if key != "value" else name,
                      atol, rtol, dtype, finite, skip)
    elif isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise AssertionError(f"{name}: expected {len(expected)} results, got {type(got).__name__}")
        for i, (g, e) in enumerate(zip(got, expected)):
            _walk(g, e, f"{name}[{i}]", atol, rtol, dtype, finite, skip)
    else:
        compare(got, expected, name=name, atol=atol, rtol=rtol)


def numbers(function: str, args: list, tolerance: Callable[[float], float],
            hint: Callable[[Any, float, float], str]) -> Callable[[Any, Any], None]:
    """A check of a list of numbers (the answers ``function(*a)`` for ``a`` in ``args``, via ``_num``):
    each within ``tolerance(expected)``; ``hint(args, got, expected)`` says what to think about."""
    def check(got, expected):
        if not isinstance(got, list) or len(got) != len(expected):
            raise AssertionError(f"{function} should return a number")
        for a, g, e in zip(args, got, expected):
            call = f"{function}({', '.join(f'{x:.4g}' if isinstance(x, float) else repr(x) for x in a)})"
            if g is None:
                raise AssertionError(f"{call} is None: {NOTHING}")
            if not isinstance(g, float):
                raise AssertionError(f"{call} should return a number, got {g}")
            if not math.isfinite(g) or abs(g - e) >= tolerance(e):
                raise AssertionError(f"{call} = {g:.6g}: {hint(a, g, e)}")
    return check


def number_probe(function: str, args: list) -> str:
    return HELPERS + f"result = [_num({function}(*a)) for a in {args!r}]\n"


def names(function: str, allowed: set[str], *, right: bool, both: tuple[str, ...] = (),
          wrong: str = "") -> Callable[[Any, Any], None]:
    """A check of a prediction answered as a set of names (reduced by ``_names``): a set, of the
    ``allowed`` names, not empty, at most one of each pair "more_X_help"/"more_X_hurt" for X in
    ``both``; ``right``: equal to the expected set (``wrong`` says why not)."""
    def check(got, expected):
        if not isinstance(got, dict) or got.get("type") != "set":
            kind = got.get("type") if isinstance(got, dict) else type(got).__name__
            raise AssertionError(f"{function}() should return a set of names, got {kind}")
        answer = set(got.get("items", []))
        unknown = answer - allowed
        if unknown:
            raise AssertionError(f"{sorted(unknown)} are not among the names {sorted(allowed)}")
        if not answer:
            raise AssertionError(f"choose at least one of {sorted(allowed)}")
        for what in both:
            if {f"more_{what}_help", f"more_{what}_hurt"} <= answer:
                raise AssertionError(f"more {what} cannot both help and hurt")
        if right and answer != set(expected["items"]):
            raise AssertionError(wrong)
    return check


# ---- notebooks 05, 07, 08, 09 ----
PLAIN = '''import torch
def plain(x):
    """What goes back to the grader: tensors (detached copies), numbers, lists and dicts of them."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return x
'''


def choice_probe(function: str) -> str:
    """Probe code for a prediction question: the answer's type and its elements, as strings."""
    return PLAIN + (f"answer = {function}()\n"
                    "items = sorted(str(a) for a in answer) if isinstance(answer, (set, frozenset, list, tuple)) else None\n"
                    "result = {'set': isinstance(answer, (set, frozenset)), 'items': items, 'repr': repr(answer)[:80]}\n")


def _items(got: Any) -> tuple[bool, list[str] | None, str]:
    if not isinstance(got, dict) or not isinstance(got.get("set"), bool):
        raise AssertionError("the answer did not come back")
    items = got.get("items")
    if items is not None and not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
        raise AssertionError("the answer did not come back")
    return got["set"], items, str(got.get("repr", ""))[:80]


def is_choice(options: set[str], what: str, *, one: bool = False) -> Callable[[Any, Any], None]:
    """Public check: a set of ``what`` (exactly one when ``one``), each among ``options``."""
    def check(got, expected) -> None:
        is_set, items, text = _items(got)
        example = "{" + repr(sorted(options)[0]) + "}"
        if not is_set or items is None:
            raise AssertionError(f"return a set of {what}, e.g. {example}, got {text}")
        unknown = sorted(set(items) - options)
        if unknown:
            raise AssertionError(f"{unknown} are not among the options {sorted(options)}")
        if one and len(items) != 1:
            raise AssertionError(f"return a set of one of {sorted(options)}, e.g. {example}, got {text}")
        if not items:
            raise AssertionError(f"the empty set: at least one of {sorted(options)} is right")
    return check


def right_choice(hint: Callable[[set[str], set[str]], str]) -> Callable[[Any, Any], None]:
    """Hidden check: the answer's elements (a set or any iterable) are the reference's; else
    ``hint(answer, right)`` says what is wrong (without naming the right set)."""
    def check(got, expected) -> None:
        _, items, _ = _items(got)
        answer, right = set(items or ()), set(expected["items"])
        if answer != right:
            raise AssertionError(hint(answer, right) or "not quite")
    return check


def number(got: Any, what: str) -> float:
    """``got`` as a finite Python number (a bool is not one), else AssertionError."""
    if type(got) not in (int, float):
        raise AssertionError(f"{what}: return a Python number, got {type(got).__name__}")
    if not math.isfinite(got):
        raise AssertionError(f"{what}: got {got}, not a finite number")
    return got
