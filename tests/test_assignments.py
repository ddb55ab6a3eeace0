"""The assignment pipeline: student notebooks are current, and every check can fail.

* notebooks/ equals what ``otter assign`` makes from solutions/ (else: run ``make notebooks``);
* on the blank student notebook, each question's public tests FAIL;
* on the master's solutions, each question's public tests (as the student sees them) PASS.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from metalib.assignments import NOTEBOOKS, SOLUTIONS, masters, stale_notebooks
from notebook_runner import cells_through_last, grade_cells, questions

MASTERS = masters()


def test_student_notebooks_are_current():
    stale = stale_notebooks()
    assert not stale, f"notebooks/ is out of date with solutions/ for {stale}: run `make notebooks`"


def test_every_master_has_autograded_questions():
    assert MASTERS, "no master notebooks found in solutions/"
    for master in MASTERS:
        assert questions(NOTEBOOKS / master.name), f"{master.name} has no question with public tests"


@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_public_tests_fail_on_blank_stubs(master: Path):
    student = NOTEBOOKS / master.name
    nb = nbformat.read(student, as_version=4)
    cells = cells_through_last(nb, lambda c: c.cell_type == "code" and "grader.check(" in c.source)
    results = grade_cells(cells, student)
    passing = [q for q, ok in results.items() if ok]
    assert not passing, f"{master.name}: public tests of {passing} pass on the blank stub, so they cannot fail"


@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_public_tests_pass_on_solutions(master: Path):
    nb = nbformat.read(SOLUTIONS / master.name, as_version=4)
    cells = cells_through_last(nb, lambda c: c.cell_type == "raw" and c.source.lstrip().upper().startswith("# END QUESTION"))
    results = grade_cells(cells, NOTEBOOKS / master.name)
    failing = [q for q, ok in results.items() if not ok]
    assert not failing, f"{master.name}: public tests of {failing} fail on the solution"


def test_hidden_tests_reach_the_autograder_but_not_students(tmp_path):
    """Hidden tests are in the autograder zip only; the student notebook carries public tests only."""
    import zipfile

    from metalib.assignments import student_notebook

    for master in MASTERS:
        text, zip_path = student_notebook(master, tmp_path)
        source = nbformat.reads(text, as_version=4)
        assert zip_path is not None and zip_path.is_file(), f"no autograder zip for {master.name}"
        hidden = [c.source for c in nbformat.read(master, as_version=4).cells
                  if c.cell_type == "code" and "hidden: true" in c.source]
        assert hidden, f"{master.name} has no hidden tests"
        names = [src.split("def ", 1)[1].split("(", 1)[0] for src in hidden]
        with zipfile.ZipFile(zip_path) as zf:
            graded = "".join(zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/"))
        public = str(source.metadata["otter"]["tests"])
        for name in names:
            assert name in graded, f"hidden test {name} of {master.name} is missing from the autograder"
            assert name not in public, f"hidden test {name} of {master.name} leaked into the student notebook"
