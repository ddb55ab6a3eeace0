"""Notebook 06 stages Problem 1: the student derives g_MAML before reading it (issue 21, item 1).

The master holds the full derivation as a model answer; the generated student notebook must not show
it before the autograded questions Q1-Q3 (the one-step Jacobian, the two-step product, any k).
"""
from __future__ import annotations

import json

from metalib.assignments import NOTEBOOKS, SOLUTIONS

STEM = "06_maml_gradient"
# Lines that only the full derivation writes: the k-step chain rule, the transposed product, the boxed result.
DERIVATION = [r"J_{k-1} J_{k-2} \cdots J_0", r"J_0^\top J_1^\top \cdots J_{k-1}^\top", r"\boxed"]


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def _first(cells, text):
    return next(i for i, c in enumerate(cells) if text in c)


def test_master_holds_the_full_derivation():
    cells = _cells(SOLUTIONS / f"{STEM}.ipynb")
    for line in DERIVATION:
        assert any(line in c for c in cells), f"the master's model answer lost {line!r}: update DERIVATION here"


def test_student_notebook_shows_no_derivation_before_q1_to_q3():
    cells = _cells(NOTEBOOKS / f"{STEM}.ipynb")
    last_check = max(_first(cells, f'grader.check("{q}")') for q in ("q1", "q1b", "q2", "q3"))
    early = [(i, line) for i, c in enumerate(cells[:last_check]) for line in DERIVATION if line in c]
    assert not early, f"the student notebook shows the derivation of g_MAML before Q1-Q3 (cell, line): {early}"
    late = [line for c in cells[last_check:] for line in DERIVATION if line in c]
    assert late, "the model answer (the full derivation) should follow the questions in the student notebook"
