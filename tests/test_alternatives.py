"""Every question accepts answers written differently from the master (issue 21, item 4).

Each variant in ``tests/alternatives/`` is put into the student notebook and graded by the real
grader (`metalib.grading.grade_folder`, the code behind ``python -m metalib grade``): full marks, no
flags. A question without an alternative, or an "alternative" identical to the master's solution, fails.
"""
from __future__ import annotations

import ast

import nbformat
import pytest

from alternatives import load
from grading_corpus import _solution_sources, answer_index, solved
from metalib.assignments import SOLUTIONS, masters
from metalib.grading import Assignment, grade_folder

ALTERNATIVES = load()


def _normal(src: str) -> str:
    return ast.dump(ast.parse(src))


@pytest.mark.parametrize("master", masters(), ids=lambda p: p.stem)
def test_every_question_has_a_different_alternative(master):
    assignment = Assignment.from_master(master)
    alts = ALTERNATIVES.get(master.stem, {})
    missing = [q.name for q in assignment.auto_questions if not alts.get(q.name)]
    assert not missing, f"{master.stem}: no alternative solution for {missing} (add them to tests/alternatives/)"
    solution = _solution_sources(master.stem)
    for q in assignment.auto_questions:
        for variant in alts[q.name]:
            assert set(variant) >= set(q.functions), f"{master.stem} {q.name}: a variant must define {q.functions}"
            for fn, src in variant.items():
                assert _normal(src) != _normal(solution[fn]), f"{master.stem} {q.name}: {fn}'s variant is the master's"


@pytest.mark.parametrize("name", sorted(ALTERNATIVES))
def test_alternatives_get_full_marks(name, tmp_path):
    assignment = Assignment.from_master(SOLUTIONS / f"{name}.ipynb")
    alts = ALTERNATIVES[name]
    folder = tmp_path / "submissions"
    folder.mkdir()
    for i in range(max(len(v) for v in alts.values())):
        nb = solved(name)
        for variants in alts.values():
            for fn, src in variants[min(i, len(variants) - 1)].items():
                nb.cells[answer_index(nb, fn)].source = src
        nbformat.write(nb, folder / f"variant{i}.ipynb")
    results = grade_folder(folder, assignment, timeout=120, jobs=2, progress=False)
    full = {q.name: q.points for q in assignment.auto_questions}
    for r in results:
        failed = {q: [t for t in ts if not t[2]] for q, ts in r.tests.items() if any(not t[2] for t in ts)}
        assert r.scores == full and not r.flags, (r.file, r.status, failed, r.flags)
