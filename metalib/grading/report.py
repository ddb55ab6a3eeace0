"""``grades.csv`` and ``report.md`` of a grading run, written atomically by the grader alone.

Everything a submission can influence (its file name, error messages, its cells' exceptions) is
escaped: in report.md it becomes one line of plain text (no headings, lists, links or HTML can be
forged, e.g. a message with newlines and "## alice: 10 / 10"), and in grades.csv a text cell
cannot start a spreadsheet formula.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

__all__ = ["write_reports", "md", "code", "cell"]

MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md(text, cap: int = 500) -> str:
    """One line of literal text for Markdown: whitespace runs collapsed, every markup character escaped."""
    flat = " ".join(str(text).split())[:cap]
    return MD_SPECIAL.sub(r"\\\1", flat)


def code(text, cap: int = 120) -> str:
    """An inline code span of literal text (no backticks, one line)."""
    return "`" + " ".join(str(text).replace("`", "'").split())[:cap] + "`"


def cell(text) -> str:
    """A CSV text cell that no spreadsheet evaluates as a formula."""
    text = " ".join(str(text).split())
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_reports(results, assignment, out: Path, *, isolated: bool = True, seed: int | None = None) -> tuple[Path, Path]:
    """``grades.csv`` and ``report.md`` in ``out`` (created), each replaced in one atomic step."""
    out.mkdir(parents=True, exist_ok=True)
    qs = assignment.auto_questions
    maximum = sum(q.points for q in qs)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "file", "status", *[f"{q.name} ({q.points:g})" for q in qs], "total", "max", "flags"])
    for r in results:
        flags = [f"{q}: uses {', '.join(n)}" for q, n in r.flags.items()]
        flags += [f"{q}: close to the library's source: {', '.join(s)}" for q, s in r.similar.items()]
        w.writerow([cell(r.student), cell(r.file), cell(r.status), *[r.scores.get(q.name, 0.0) for q in qs], r.total,
                    maximum, cell("; ".join(flags))])
    from .folder import HIDDEN_WEIGHT

    lines = [f"# Grades: {assignment.name}", "", f"{len(results)} submissions, {maximum:g} auto-graded points.",
             f"Hidden tests are marked (hidden); students only saw the public ones. Hidden tests carry "
             f"{HIDDEN_WEIGHT:.0%} of each question's points.", ""]
    if seed is not None:
        lines += [f"Hidden inputs were drawn for this run with seed {seed} (`--seed {seed}` repeats them).", ""]
    if not isolated:
        lines += ["**Not isolated**: this run used `--no-sandbox`; submissions could read other files and tamper "
                  "with the grading (see docs/GRADING.md).", ""]
    manual = [q.name for q in assignment.questions if q.manual]
    if manual:
        lines += [f"Manually graded questions (not scored here): {', '.join(manual)}.", ""]
    for r in results:
        lines += [f"## {md(r.student, 120)}: {r.total:g} / {maximum:g}", "",
                  f"File {code(r.file)}, status: {md(r.status, 400)}."]
        lines += [f"* error in the submission: {md(e, 400)}" for e in r.errors[:5]]
        for q in qs:
            tests = r.tests.get(q.name, [])
            passed = sum(1 for t in tests if t[2])
            lines.append(f"* **{q.name}**: {r.scores.get(q.name, 0):g} / {q.points:g} ({passed}/{len(tests)} tests passed)")
            if q.name in r.flags:
                lines.append(f"  * FLAGGED for review: uses metalib's {md(', '.join(r.flags[q.name]))} instead of "
                             "solving; scored 0")
            if q.name in r.similar:
                lines.append(f"  * FLAGGED for review: close to the library's source: {md(', '.join(r.similar[q.name]))}")
            if tests and all(t[3] == r.status for t in tests):
                continue  # not graded at all: the status line says why
            lines += [f"  * {'hidden' if t[1] else 'public'} {code(t[0])}: {md(t[3])}" for t in tests if not t[2]]
        lines.append("")
    _atomic_write(out / "grades.csv", buf.getvalue())
    _atomic_write(out / "report.md", "\n".join(lines))
    return out / "grades.csv", out / "report.md"
