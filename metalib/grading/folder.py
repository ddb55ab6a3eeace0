"""Grade a folder of submissions: one worker process per file, a CSV of scores and a report.

``python -m metalib grade SUBMISSIONS --assignment 06_maml_gradient [--out grades/]`` writes
``grades.csv`` (one row per submission: status, points per question, total, flags) and
``report.md`` (per student and question: the score, each failed test with its message, whether it
was public or hidden, and review flags). Every file in the folder counts as one submission
(dotfiles excluded); nothing in the folder is written or moved. Each submission runs in its own
process with a wall-clock limit, so a hung kernel costs that submission, never the run.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .assignment import Assignment
from .references import reference_uses

__all__ = ["StudentResult", "grade_submission", "grade_folder", "write_reports"]


@dataclass
class StudentResult:
    student: str
    file: str
    status: str
    scores: dict[str, float]          # question -> points earned (auto-graded questions)
    tests: dict[str, list]            # question -> [[test, hidden, passed, message], ...]
    flags: dict[str, list[str]]       # question -> metalib names used instead of solving
    errors: list[str]                 # the submission's cells that raised

    @property
    def total(self) -> float:
        return round(sum(self.scores.values()), 4)


def _stub_cells(assignment: Assignment) -> list[str]:
    import nbformat

    from ..assignments import NOTEBOOKS

    student = NOTEBOOKS / assignment.master.name
    if not student.is_file():
        return []
    return [c.source for c in nbformat.read(student, as_version=4).cells if c.cell_type == "code"]


def grade_submission(path: Path, assignment: Assignment, *, timeout: int = 60,
                     submission_timeout: int = 900, stub: list[str] | None = None) -> StudentResult:
    """Grade one file in a worker process (killed after ``submission_timeout`` seconds)."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="metalib-grade-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "metalib.grading.runner", str(path), str(assignment.master), str(out), str(timeout)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=submission_timeout,
                                  start_new_session=True)
            outcome = json.loads(out.read_text()) if out.is_file() else {
                "status": f"grader worker failed (exit {proc.returncode}): {proc.stderr[-300:]}", "errors": [], "questions": {}}
        except subprocess.TimeoutExpired:
            outcome = {"status": f"stopped after {submission_timeout} s", "errors": [], "questions": {}}
    try:
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    except Exception:
        cells = []
    stub = _stub_cells(assignment) if stub is None else stub
    scores, tests, flags = {}, {}, {}
    for q in assignment.auto_questions:
        results = outcome["questions"].get(q.name) or [[t.name, t.hidden, False, outcome["status"]] for t in q.tests]
        used = sorted({n for f in q.functions for n in reference_uses(cells, stub, f)})
        passed = sum(1 for r in results if r[2])
        scores[q.name] = 0.0 if used else round(q.points * passed / max(len(results), 1), 4)
        tests[q.name], flags[q.name] = results, used
    return StudentResult(path.stem, path.name, outcome["status"], scores, tests,
                         {q: f for q, f in flags.items() if f}, outcome["errors"])


def grade_folder(folder: str | Path, assignment: Assignment | str | Path, *, out: str | Path | None = None,
                 timeout: int = 60, submission_timeout: int = 900, jobs: int = 1,
                 progress: bool = True) -> list[StudentResult]:
    """Grade every file in ``folder``; write ``grades.csv`` and ``report.md`` into ``out`` if given."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of submissions")
    if not isinstance(assignment, Assignment):
        assignment = Assignment.from_master(assignment)
    if out is not None and Path(out).resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"the output folder {out} is inside the submissions folder {folder}: choose another "
                         "(grading never writes into the submissions)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    stub = _stub_cells(assignment)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(grade_submission, f, assignment, timeout=timeout,
                               submission_timeout=submission_timeout, stub=stub) for f in files]
        results = [fut.result() for fut in tqdm(futures, desc=f"grading {assignment.name}", disable=not progress)]
    if out is not None:
        write_reports(results, assignment, Path(out))
    return results


def write_reports(results: list[StudentResult], assignment: Assignment, out: Path) -> tuple[Path, Path]:
    """``grades.csv`` and ``report.md`` in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    qs = assignment.auto_questions
    maximum = sum(q.points for q in qs)
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "file", "status", *[f"{q.name} ({q.points:g})" for q in qs], "total", "max", "flags"])
        for r in results:
            w.writerow([r.student, r.file, r.status, *[r.scores.get(q.name, 0.0) for q in qs], r.total, maximum,
                        "; ".join(f"{q}: uses {', '.join(n)}" for q, n in r.flags.items())])
    lines = [f"# Grades: {assignment.name}", "", f"{len(results)} submissions, {maximum:g} auto-graded points.",
             "Hidden tests are marked (hidden); students only saw the public ones.", ""]
    manual = [q.name for q in assignment.questions if q.manual]
    if manual:
        lines += [f"Manually graded questions (not scored here): {', '.join(manual)}.", ""]
    for r in results:
        lines += [f"## {r.student}: {r.total:g} / {maximum:g}", "", f"File `{r.file}`, status: {r.status}."]
        lines += [f"* error in the submission: {e}" for e in r.errors[:5]]
        for q in qs:
            tests = r.tests.get(q.name, [])
            passed = sum(1 for t in tests if t[2])
            lines.append(f"* **{q.name}**: {r.scores.get(q.name, 0):g} / {q.points:g} ({passed}/{len(tests)} tests passed)")
            if q.name in r.flags:
                lines.append(f"  * FLAGGED for review: uses metalib's {', '.join(r.flags[q.name])} instead of solving; scored 0")
            if tests and all(t[3] == r.status for t in tests):
                continue  # not graded at all: the status line says why
            lines += [f"  * {'hidden' if t[1] else 'public'} `{t[0]}`: {t[3]}" for t in tests if not t[2]]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return out / "grades.csv", out / "report.md"
