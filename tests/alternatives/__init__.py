"""Alternative correct solutions: every question, answered differently from the master (issue 21, item 4).

A hidden test must accept any correct answer, not the master's way of writing it. Each module
``nbNN.py`` here (NN = the notebook's number) defines

    ALTERNATIVES = {"q1": [{"function_name": "cell source defining it", ...}, ...], ...}

one list per question, each entry a complete answer to that question written another way (other
tensor ops, another random call where the tests can only check distributions, a loop instead of a
vectorised form). ``tests/test_alternatives.py`` puts variant i of every question into the student
notebook (a question with fewer variants repeats its last) and grades it with the real grader:
every variant must get full marks.
"""
from __future__ import annotations

import importlib
import pkgutil

from metalib.assignments import masters


def load() -> dict[str, dict[str, list[dict[str, str]]]]:
    """{notebook stem: ALTERNATIVES} for every module of this package, keyed by the master it answers."""
    stems = {m.stem[:2]: m.stem for m in masters()}
    out = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("nb"):
            continue
        number = info.name[2:4]
        if number not in stems:
            raise ValueError(f"tests/alternatives/{info.name}.py names no master notebook (numbers: {sorted(stems)})")
        out[stems[number]] = importlib.import_module(f"{__name__}.{info.name}").ALTERNATIVES
    return out
