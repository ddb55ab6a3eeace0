"""Grade one submission: run the student's code in a fresh kernel, then every test of every question.

Runs as a worker process (``python -m metalib.grading.runner SUBMISSION MASTER RESULT.json``) so
that the folder grader can kill it, kernel included, if anything hangs beyond repair. Robust to
what real submissions contain:

* a cell that raises: execution goes on (the question's tests then report the error);
* an infinite loop: each cell and each question's tests get ``timeout`` seconds, then the kernel
  is interrupted and that question scores what it passed so far;
* a deleted or renamed answer: "`softmax` is not defined: was its cell deleted or renamed?";
* a huge printed output: the kernel's stdout/stderr are capped at 20,000 characters per stream;
* a notebook saved mid-execution: outputs and execution counts are ignored (everything reruns);
* a dead kernel: the questions not graded yet score 0 with that reason.

Only code cells up to the last one defining an answer function run (experiments after the
exercises do not affect the grade), in quick mode, with matplotlib's Agg backend. The submission
itself is never modified: it is read, and executed from a copy in a temporary folder.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .assignment import Assignment, defined_functions

__all__ = ["execute_submission", "GRADER_LINES"]

GRADER_LINES = ("otter.Notebook(", "grader.check(", "grader.check_all(", "grader.export(")
OUTPUT_CAP = 20_000

PREAMBLE = f'''
import sys as _gr_sys
class _GrCapped:
    def __init__(self, stream, cap):
        self._stream, self._left, self._warned = stream, cap, False
    def write(self, text):
        if self._left > 0:
            self._stream.write(text[:self._left])
        elif not self._warned:
            self._stream.write("\\n[grader: output truncated]\\n")
            self._warned = True
        self._left -= len(text)
        return len(text)
    def __getattr__(self, name):
        return getattr(self._stream, name)
_gr_sys.stdout = _GrCapped(_gr_sys.stdout, {OUTPUT_CAP})
_gr_sys.stderr = _GrCapped(_gr_sys.stderr, {OUTPUT_CAP})
'''

TEST_CELL = '''
def _gr_run(_gr_tests, _gr_functions, _gr_path):
    import json as _json
    results = []
    def save():
        with open(_gr_path, "w") as f:
            _json.dump(results, f)
    for i, (name, hidden, src) in enumerate(_gr_tests):
        try:
            exec(compile(src, "<test " + name + ">", "exec"), globals())
            results.append([name, hidden, True, ""])
        except KeyboardInterrupt:
            results.append([name, hidden, False, "timed out (interrupted after the time limit)"])
            results.extend([n, h, False, "not run: an earlier test of this question timed out"] for n, h, _ in _gr_tests[i + 1:])
            save()
            return
        except NameError as err:
            missing = getattr(err, "name", None)
            hint = ("`" + str(missing) + "` is not defined: was its cell deleted, renamed or never run?"
                    if missing in _gr_functions else "NameError: " + str(err))
            results.append([name, hidden, False, hint])
        except BaseException as err:
            results.append([name, hidden, False, type(err).__name__ + ": " + str(err)[:500]])
        save()
    save()
_gr_run({tests!r}, {functions!r}, {path!r})
'''


def _code_cells(nb) -> list[str]:
    """The submission's code, without Otter's own cells (init, check)."""
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return [s for s in cells if not any(marker in s for marker in GRADER_LINES)]


def _through_last_answer(cells: list[str], functions: set[str]) -> list[str]:
    last = max((i for i, src in enumerate(cells) if functions & set(defined_functions(src))), default=len(cells) - 1)
    return cells[:last + 1]


def execute_submission(path: str | Path, assignment: Assignment, *, timeout: int = 60) -> dict:
    """Run one submission and its tests; return ``{"status", "errors", "questions": {q: [tests]}}``.

    Each test is ``[name, hidden, passed, message]``. ``status`` is "graded", "not a notebook",
    "no code" or "kernel died: ...". ``errors`` lists the student's cells that raised.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook, unreadable: graded as zero with the reason
        return {"status": f"not a notebook ({type(err).__name__}: {str(err)[:200]})", "errors": [], "questions": {}}
    cells = _through_last_answer(_code_cells(nb), assignment.functions)
    if not any(s.strip() for s in cells):
        return {"status": "no code", "errors": [], "questions": {}}
    with tempfile.TemporaryDirectory(prefix="metalib-grade-") as tmp:
        run = nbformat.v4.new_notebook()
        run.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        run.cells = [nbformat.v4.new_code_cell(PREAMBLE)] + [nbformat.v4.new_code_cell(s) for s in cells]
        for q in assignment.auto_questions:
            tests = [(t.name, t.hidden, t.source) for t in q.tests]
            run.cells.append(nbformat.v4.new_code_cell(TEST_CELL.format(
                tests=tests, functions=list(q.functions), path=str(Path(tmp) / f"{q.name}.json"))))
        env_status = "graded"
        client = NotebookClient(run, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
                                error_on_timeout={"ename": "Timeout", "evalue": f"cell ran over {timeout} s",
                                                  "traceback": []},
                                kernel_name="python3", resources={"metadata": {"path": tmp}})
        try:
            client.execute()
        except DeadKernelError as err:
            env_status = f"kernel died ({str(err)[:200]})"
        except Exception as err:  # nbclient itself failed: report, never crash the folder run
            env_status = f"execution failed ({type(err).__name__}: {str(err)[:200]})"
        errors = [e for e in (_cell_error(i, c) for i, c in enumerate(run.cells[1:len(cells) + 1], 1)) if e]
        questions = {}
        for q in assignment.auto_questions:
            file = Path(tmp) / f"{q.name}.json"
            done = json.loads(file.read_text()) if file.is_file() else []
            reason = "not run: " + (env_status if env_status != "graded" else "the tests timed out or crashed")
            seen = {r[0] for r in done}
            questions[q.name] = done + [[t.name, t.hidden, False, reason] for t in q.tests if t.name not in seen]
    return {"status": env_status, "errors": errors, "questions": questions}


def _cell_error(index: int, cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"code cell {index}: {out.get('ename')}: {str(out.get('evalue'))[:300]}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: SUBMISSION MASTER RESULT_JSON [TIMEOUT]."""
    argv = sys.argv[1:] if argv is None else argv
    submission, master, result = argv[:3]
    timeout = int(argv[3]) if len(argv) > 3 else 60
    os.environ.setdefault("METALIB_QUICK", "1")
    os.environ["MPLBACKEND"] = "Agg"
    outcome = execute_submission(submission, Assignment.from_master(master), timeout=timeout)
    Path(result).write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
