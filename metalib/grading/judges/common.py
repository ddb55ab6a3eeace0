"""Pieces shared by the judges of notebooks 05, 07, 08 and 09: plain outputs, prediction questions, numbers.

``PLAIN`` is probe code defining ``plain(x)``: tensors detached and copied, containers turned into
dicts and lists, number subclasses (``numpy.float64``) into Python numbers, so that what comes back
from the sandbox loads with ``weights_only``. A prediction question ("return a set of letters")
comes back from `choice_probe` as ``{"set": bool, "items": sorted strings or None, "repr": str}``;
`is_choice` (public) and `right_choice` (hidden) judge it outside, against the reference answer.
"""
from __future__ import annotations

import math
from typing import Any, Callable

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
