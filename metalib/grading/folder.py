"""Grade a folder of submissions: each in its own sandbox, judged in the grader's process.

``python -m metalib grade SUBMISSIONS --assignment 06_maml_gradient [--out grades/] [--jobs 2]``
writes ``grades.csv`` and ``report.md`` (`report`). For each file in the folder (dotfiles
excluded; nothing in the folder is written or moved):

1. the grader reads the notebook's code cells itself (`submission`, tolerant of careless files);
2. a job folder gets the code and the checks: *probes* for assignments with a `judge.Judge`
   (hidden inputs drawn when this run starts), else Otter's test cells;
3. `runner` executes the job in a `sandbox` (bubblewrap) that sees neither this folder, nor the
   masters, nor the output folder, nor the other jobs; the reference answers raise there;
4. the grader reads back plain data only and judges it in its own process; the job folder is deleted.

Reports are written by the grader alone, atomically, after every sandbox has ended; a submission
that dies, hangs or kills what it can see costs its own row only, with a status saying what happened.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox
from .assignment import Assignment
from .guard import guard_source
from .judge import NOT_AVAILABLE, compare, expected_value, judge_for, load_output, stub_source
from .references import reference_uses, similar_to_library
from .report import write_reports
from .runner import JOB, OUTPUTS, RESULT
from .submission import NotANotebook, code_cells, through_last_answer, without_grader_calls

__all__ = ["StudentResult", "Grading", "grade_folder", "write_reports", "HIDDEN_WEIGHT"]

HIDDEN_WEIGHT = 0.75   # share of a question's points for its hidden tests (public: the rest)
MAX_MESSAGE = 500


@dataclass
class StudentResult:
    student: str
    file: str
    status: str
    scores: dict[str, float]          # question -> points earned (auto-graded questions)
    tests: dict[str, list]            # question -> [[test, hidden, passed, message], ...]
    flags: dict[str, list[str]]       # question -> metalib names used instead of solving (scored 0)
    errors: list[str]                 # the submission's cells that raised
    similar: dict[str, list[str]] = field(default_factory=dict)  # question -> answers close to metalib's source

    @property
    def total(self) -> float:
        return round(sum(self.scores.values()), 4)


def score(points: float, results: list) -> float:
    """Public tests weigh 1 - HIDDEN_WEIGHT of the points, hidden tests HIDDEN_WEIGHT."""
    groups = [[r[2] for r in results if not r[1]], [r[2] for r in results if r[1]]]
    weights = [1 - HIDDEN_WEIGHT, HIDDEN_WEIGHT] if all(groups) else [1.0, 1.0]
    return round(points * sum(w * sum(g) / len(g) for w, g in zip(weights, groups) if g), 4)


def _clean(text, cap: int = MAX_MESSAGE) -> str:
    return str(text)[:cap]


class Grading:
    """One grading run: the judge's probes and expected values, a private workspace, sandbox slots."""

    def __init__(self, assignment: Assignment, *, timeout: int = 60, submission_timeout: int = 900,
                 jobs: int = 1, isolate: bool = True, limits: sandbox.Limits = sandbox.Limits(),
                 seed: int | None = None, stub: Path | None = None):
        import torch

        self.assignment, self.timeout, self.submission_timeout = assignment, timeout, submission_timeout
        self.isolate, self.limits = isolate, limits
        if isolate:
            sandbox.check_available()
        self.judge = judge_for(assignment.name)
        self.seed = random.SystemRandom().randrange(2**62) if seed is None else seed
        self.probes, self.expected = [], {}
        if self.judge is not None:
            self.probes = self.judge.probes(random.Random(self.seed))
            references, dtype = self.judge.references(), torch.get_default_dtype()
            try:
                self.expected = {p.name: expected_value(p, references) for p in self.probes}
            finally:
                torch.set_default_dtype(dtype)
            self.probes = _by_function(self.probes, assignment, references)
        # questions the judge checks; any other question (one the judge does not know) runs Otter's tests
        self.judged = {p.question for p in self.probes}
        self.stub = code_cells(stub) if stub is not None else _stub_cells(assignment)
        # the master's own answers may call the library too (09's proto_head: notebook 04's pn.prototypes)
        self.solution = code_cells(assignment.master) if Path(assignment.master).is_file() else []
        self.workspace = Path(tempfile.mkdtemp(prefix="metalib-grade-"))
        self.package = self._package()
        # isolated: slots (user ids) no other grading run on this machine holds, held until `close`
        slots, self._slot_locks = sandbox.claim_slots(max(1, jobs)) if isolate else (range(max(1, jobs)), [])
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in slots:
            self.slots.put(slot)

    def close(self) -> None:
        for lock in self._slot_locks:
            lock.close()
        shutil.rmtree(self.workspace, ignore_errors=True)

    def _package(self) -> Path:
        """A copy of metalib without bytecode, in which the judge's reference answers raise (the guarded
        ones only while the probes run)."""
        import metalib

        src = Path(metalib.__file__).resolve().parent
        dest = self.workspace / "package" / "metalib"
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for references, rewrite in ((self.judge.unavailable, stub_source), (self.judge.guarded, guard_source)) \
                if self.judge else ():
            for module, names in references.items():
                path = dest.joinpath(*module.split(".")[1:]).with_suffix(".py")
                path.write_text(rewrite(path.read_text(), names, module))
        for p in [dest.parent, *dest.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        return dest

    # -- one submission ---------------------------------------------------------------------
    def grade(self, path: Path) -> StudentResult:
        qs = self.assignment.auto_questions
        try:
            cells = code_cells(path)
        except (NotANotebook, OSError, RecursionError) as err:
            return self._result(path, f"not a notebook ({_clean(err, 200)})", {}, [], [])
        flags = {q.name: sorted({n for f in q.functions for n in reference_uses(cells, self.stub, f)
                                 if n in reference_uses(cells, self.solution, f)}) for q in qs}
        similar = similar_to_library(cells, self.assignment, self.judge)
        run = through_last_answer(without_grader_calls(cells), self.assignment.functions)
        if not any(s.strip() for s in run):
            return self._result(path, "no code", {}, [], [], flags, similar)
        slot = self.slots.get()
        try:
            status, errors, found = self._run(run, slot)
        finally:
            self.slots.put(slot)
        errors = [e for e in errors if not _demo_cell_error(e, run, self.assignment.functions)]
        return self._result(path, status, found, errors, cells, flags, similar)

    def _job(self, cells: list[str]) -> dict:
        questions = []
        for q in self.assignment.auto_questions:
            entry = {"name": q.name, "functions": list(q.functions)}
            if q.name in self.judged:
                entry["probes"] = [[p.name, p.code] for p in self.probes if p.question == q.name]
            else:
                entry["tests"] = [[t.name, t.hidden, t.source] for t in q.tests]
            questions.append(entry)
        return {"cells": cells, "timeout": self.timeout, "questions": questions}

    def _run(self, cells: list[str], slot: int) -> tuple[str, list[str], dict]:
        job = Path(tempfile.mkdtemp(prefix=f"job{slot}-", dir=self.workspace))
        log = job.with_suffix(".log")
        try:
            (job / JOB).write_text(json.dumps(self._job(cells)))
            if self.isolate:
                if os.geteuid() == 0:
                    os.chown(job, sandbox.SANDBOX_UID_BASE + slot, sandbox.SANDBOX_UID_BASE + slot)
                job.chmod(0o755)
                cmd = sandbox.command([f"{sandbox.LIB_MOUNT}/metalib/grading/runner.py", sandbox.JOB_MOUNT], job, slot=slot,
                                      limits=self.limits, package=self.package)
                env = None
            else:
                cmd = [sys.executable, str(self.package / "grading" / "runner.py"), str(job)]
                env = {**os.environ, "PYTHONPATH": str(self.package.parent), "METALIB_QUICK": "1", "MPLBACKEND": "Agg"}
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=job, env=env, start_new_session=True)
                try:
                    proc.wait(timeout=self.submission_timeout)
                    ended = None
                except subprocess.TimeoutExpired:
                    ended = f"stopped after {self.submission_timeout} s"
                finally:
                    _kill_group(proc)
            status, errors = self._read_result(job, proc.returncode, log, ended)
            return status, errors, self._collect(job, status)
        finally:
            shutil.rmtree(job, ignore_errors=True)
            log.unlink(missing_ok=True)

    def _read_result(self, job: Path, returncode, log: Path, ended: str | None) -> tuple[str, list[str]]:
        if ended:
            return ended, []
        try:
            result = json.loads(_read_capped(job / RESULT, 2**20))
            status, errors = result["status"], result["errors"]
            if not isinstance(status, str) or not isinstance(errors, list):
                raise ValueError("malformed result")
            return _clean(status, 300), [_clean(e, 400) for e in errors[:20]]
        except Exception:
            tail = log.read_bytes()[-300:].decode("utf-8", errors="replace") if log.is_file() else ""
            return f"the sandbox ended without a result (exit {returncode}): {tail}", []

    def _collect(self, job: Path, status: str) -> dict[str, list]:
        reason = "not run: " + (status if status != "graded" else "the tests timed out or crashed")
        found = {}
        for q in self.assignment.auto_questions:
            if q.name in self.judged:
                found[q.name] = [self._judge_probe(job / OUTPUTS, p, reason) for p in self.probes if p.question == q.name]
                continue
            reported = {}
            try:
                for row in json.loads(_read_capped(job / "tests" / f"{q.name}.json", 2**20)):
                    if isinstance(row, list) and len(row) == 4 and isinstance(row[0], str):
                        reported.setdefault(row[0], (row[2] is True, _clean(row[3])))
            except Exception:
                pass
            found[q.name] = [[t.name, t.hidden, *reported.get(t.name, (False, reason))] for t in q.tests]
        return found

    def _judge_probe(self, outputs: Path, probe, reason: str) -> list:
        out, err = outputs / f"{probe.name}.pt", outputs / f"{probe.name}.err"
        try:
            if out.is_file():
                got = load_output(out)
                if probe.check is not None:
                    probe.check(got, self.expected[probe.name])
                else:
                    compare(got, self.expected[probe.name], name=probe.name, atol=probe.atol, rtol=probe.rtol)
                return [probe.name, probe.hidden, True, ""]
            message = _read_capped(err, 4096).decode("utf-8", errors="replace") if err.is_file() else reason
        except Exception as e:  # a failed comparison, or output the judge cannot read: this test fails
            message = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        return [probe.name, probe.hidden, False, _clean(message)]

    def _result(self, path: Path, status: str, found: dict, errors: list, cells: list,
                flags: dict | None = None, similar: dict | None = None) -> StudentResult:
        scores, tests = {}, {}
        for q in self.assignment.auto_questions:
            judged = q.name in self.judged
            names = [p.name for p in self.probes if p.question == q.name] if judged else [t.name for t in q.tests]
            hidden = {p.name: p.hidden for p in self.probes} if judged else {t.name: t.hidden for t in q.tests}
            results = found.get(q.name) or [[n, hidden[n], False, status] for n in names]
            reached = sorted({m.split(NOT_AVAILABLE)[0].split()[-1] for *_, m in results if NOT_AVAILABLE in m})
            if reached:  # the answer called a reference hidden while grading, by whatever route
                flags = {**(flags or {}), q.name: sorted({*(flags or {}).get(q.name, []),
                                                          *(f"{r} (not available while grading)" for r in reached)})}
            used = (flags or {}).get(q.name, [])
            scores[q.name] = 0.0 if used else score(q.points, results)
            tests[q.name] = results
        return StudentResult(path.stem, path.name, status, scores, tests,
                             {q: f for q, f in (flags or {}).items() if f}, errors, {q: s for q, s in (similar or {}).items() if s})


def _by_function(probes: list, assignment: Assignment, references: dict) -> list:
    """Each probe under the question that now defines the answer function it calls (a master may
    renumber or insert questions; the judge names questions as they were when it was written). A probe
    whose function no question defines any more is dropped: that question then runs Otter's tests."""
    import dataclasses
    import re

    owner = {f: q.name for q in assignment.auto_questions for f in q.functions}
    out = []
    for p in probes:
        called = [f for f in references if f in owner and re.search(rf"\b{f}\s*\(", p.code)]
        if called:
            out.append(dataclasses.replace(p, question=owner[called[0]]))
    return out


def _demo_cell_error(error: str, cells: list[str], functions: set[str]) -> bool:
    """A cell outside the answers (a demo) that called a reference hidden while grading: not the
    student's error, so not reported."""
    from .assignment import defined_functions

    if NOT_AVAILABLE not in error:
        return False
    try:
        index = int(error.split(":", 1)[0].split()[-1])
        return not functions & set(defined_functions(cells[index - 1]))
    except (ValueError, IndexError):
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"{path.name} is larger than {cap} bytes")
    return data


def _stub_cells(assignment: Assignment) -> list[str]:
    from ..assignments import NOTEBOOKS

    student = NOTEBOOKS / assignment.master.name
    return code_cells(student) if student.is_file() else []


def grade_folder(folder: str | Path, assignment: Assignment | str | Path, *, out: str | Path | None = None,
                 timeout: int = 60, submission_timeout: int = 900, jobs: int = 1, progress: bool = True,
                 isolate: bool = True, seed: int | None = None, limits: sandbox.Limits = sandbox.Limits()
                 ) -> list[StudentResult]:
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
    grading = Grading(assignment, timeout=timeout, submission_timeout=submission_timeout, jobs=jobs,
                      isolate=isolate, seed=seed, limits=limits)
    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [pool.submit(grading.grade, f) for f in files]
            results = [fut.result() for fut in tqdm(futures, desc=f"grading {assignment.name}", disable=not progress)]
    finally:
        grading.close()
    if out is not None:  # every sandbox has ended: only this process writes the reports
        write_reports(results, assignment, Path(out), isolated=isolate, seed=grading.seed if grading.judge else None)
    return results
