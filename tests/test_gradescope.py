"""The Gradescope autograder (metalib/grading/gradescope.py): its results.json, and the zip itself,
installed into a fresh virtual environment by its own setup script and run as Gradescope runs it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from grading_corpus import solved
from metalib.assignments import NOTEBOOKS, SOLUTIONS
from metalib.grading import Assignment, StudentResult
from metalib.grading.gradescope import build, results_json

NAME = "00_welcome"


def _result(passed: dict[str, bool], flags=None) -> tuple[StudentResult, Assignment]:
    a = Assignment.from_master(SOLUTIONS / f"{NAME}.ipynb")
    tests = {q.name: [[t.name, t.hidden, passed.get(t.name, False), ""] for t in q.tests] for q in a.auto_questions}
    return StudentResult("s", "s.ipynb", "graded", {}, tests, flags or {}, []), a


def test_results_json_weighs_hidden_tests_and_hides_them_until_published():
    a = Assignment.from_master(SOLUTIONS / f"{NAME}.ipynb")
    q = a.auto_questions[0]
    everything = {t.name: True for t in q.tests}
    data = results_json(*_result(everything))
    assert sum(t["score"] for t in data["tests"]) == pytest.approx(q.points)
    assert sum(t["max_score"] for t in data["tests"]) == pytest.approx(q.points)
    hidden = [t for t in data["tests"] if t["name"].endswith("(hidden)")]
    assert hidden and all(t["visibility"] == "after_published" for t in hidden)
    assert all(t["visibility"] == "visible" for t in data["tests"] if t not in hidden)
    public_only = results_json(*_result({t.name: True for t in q.tests if not t.hidden}))
    assert sum(t["score"] for t in public_only["tests"]) == pytest.approx(0.25 * q.points)
    flagged = results_json(*_result(everything, {q.name: ["metalib.x"]}))
    assert sum(t["score"] for t in flagged["tests"]) == 0 and "metalib.x" in flagged["tests"][0]["output"]


def test_gradescope_zip_installs_itself_and_grades_full_marks_and_zero(tmp_path):
    """Build the zip, create a fresh virtual environment with the zip's own setup.sh, grade through
    its run_autograder as Gradescope does (solved notebook: full marks; blank: zero)."""
    zip_path = build(SOLUTIONS / f"{NAME}.ipynb", tmp_path / "zips")
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
        assert {"setup.sh", "run_autograder", f"assignment/{NAME}.ipynb"} <= set(z.namelist())
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    from metalib.data.omniglot import cache_path

    env = {**os.environ, "METALIB_AG_ROOT": str(root), "METALIB_AG_TORCH_INDEX": "",  # torch from the local index
           "METALIB_AG_PYTHON": getattr(sys, "_base_executable", sys.executable),
           "METALIB_CACHE": str(cache_path().parent),  # the decoded Omniglot the suite already made
           "PIP_COMPILE": "0"}  # no bytecode compiled for torch and the rest: 113 s instead of 141 s
    env.pop("PYTHONPATH", None)
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=env, capture_output=True, text=True,
                           timeout=900)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]
    for label, nb, want in [("solved", solved(NAME), 1.0), ("blank", nbformat.read(NOTEBOOKS / f"{NAME}.ipynb", as_version=4), 0.0)]:
        shutil.rmtree(root / "submission", ignore_errors=True)
        (root / "submission").mkdir()
        nbformat.write(nb, root / "submission" / f"{NAME}.ipynb")
        run = subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        data = json.loads((root / "results" / "results.json").read_text())
        score, maximum = sum(t["score"] for t in data["tests"]), sum(t["max_score"] for t in data["tests"])
        assert maximum == pytest.approx(1.0)
        assert score == pytest.approx(want), (label, data)
