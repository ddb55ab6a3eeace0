"""Run parts of notebooks in a real kernel and ask Otter's grader for results (for tests)."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from metalib.grading.nbexec import SlicedNotebookClient

RESULT_TAG = "OTTER_RESULTS="


def questions(student_nb: Path) -> list[str]:
    """Names of the autograded questions (those with public tests in the notebook metadata)."""
    nb = nbformat.read(student_nb, as_version=4)
    return sorted(nb.metadata.get("otter", {}).get("tests", {}))


def _results_cell(notebook_name: str, names: list[str]) -> nbformat.NotebookNode:
    src = ("import json, otter\n"
           f"_grader = otter.Notebook({notebook_name!r})\n"
           f"print({RESULT_TAG!r} + json.dumps({{q: bool(_grader.check(q).passed_all) for q in {names!r}}}))")
    return nbformat.v4.new_code_cell(src)


def _warn_if_slow(nb: nbformat.NotebookNode, seconds: float, name: str, limit: float = 120.0) -> None:
    """A run of one notebook normally takes 10-20 s. Twice (CI on a fresh clone, before
    `metalib.grading.nbexec`) one took about 612 s and still passed: a missed ZeroMQ wake-up. Say which
    cells were slow (by the kernel's own timestamps), so that a long run shows where the time went."""
    if seconds <= limit:
        return
    import warnings

    from dateutil.parser import isoparse

    slow = []
    for i, cell in enumerate(nb.cells):
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            took = (isoparse(timing["shell.execute_reply"]) - isoparse(timing["iopub.execute_input"])).total_seconds()
            if took > 10:
                slow.append(f"cell {i} ({took:.0f} s): {cell.source[:60]!r}")
    warnings.warn(f"{name}: the kernel run took {seconds:.0f} s; slow cells: {slow or 'none (start or shutdown)'}",
                  stacklevel=2)


def grade_cells(cells: list, student_nb: Path, *, timeout: int = 600) -> dict[str, bool]:
    """Execute ``cells`` (errors allowed) in a temp copy of the student notebook's folder, then run
    ``grader.check`` on every question and return {question: passed_all}."""
    names = questions(student_nb)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(student_nb, Path(tmp) / student_nb.name)  # otter reads the tests from it
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [c for c in cells if c.cell_type == "code"] + [_results_cell(student_nb.name, names)]
        client = SlicedNotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3", record_timing=True,
                                resources={"metadata": {"path": tmp}})
        start = time.monotonic()
        client.execute()
        _warn_if_slow(nb, time.monotonic() - start, student_nb.name)
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
        errors = [o for o in nb.cells[-1].outputs if o.get("output_type") == "error"]
    if RESULT_TAG not in text:
        raise AssertionError(f"the grading cell printed no results: {text[-2000:]} {errors}")
    return json.loads(text.split(RESULT_TAG, 1)[1].splitlines()[0])


def cells_through_last(nb: nbformat.NotebookNode, is_last) -> list:
    """The notebook's cells up to and including the last cell for which ``is_last(cell)`` holds."""
    idx = [i for i, c in enumerate(nb.cells) if is_last(c)]
    if not idx:
        raise AssertionError("no matching cell found")
    return nb.cells[: idx[-1] + 1]
