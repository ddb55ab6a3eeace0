"""Submissions for the grading tests, built from the real student notebooks.

`solved(name)` is the student notebook with every answer cell replaced by the master's solution;
`broken_00(dest)` writes the broken-submission corpus for notebook 00 (and one for 06) into
``dest`` and returns what each file must score.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from metalib.assignments import NOTEBOOKS, SOLUTIONS
from metalib.grading.assignment import defined_functions


def _solution_sources(name: str) -> dict[str, str]:
    """function name -> the master's solution cell (markers removed), per answer cell."""
    master = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    out = {}
    for cell in master.cells:
        if cell.cell_type == "code" and "# BEGIN SOLUTION" in cell.source:
            src = "\n".join(l for l in cell.source.splitlines() if not re.match(r"\s*# (BEGIN|END) SOLUTION", l))
            for fn in defined_functions(src):
                out[fn] = src
    return out


def answer_index(nb, function: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and function in defined_functions(c.source))


def solved(name: str, skip: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The student notebook with the solutions filled in (except the functions in ``skip``)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for fn, src in _solution_sources(name).items():
        if fn not in skip:
            nb.cells[answer_index(nb, fn)].source = src
    return nb


def _with_softmax(body: str, *, name: str = "softmax") -> nbformat.NotebookNode:
    nb = solved("00_welcome")
    nb.cells[answer_index(nb, "softmax")].source = f"def {name}(z: torch.Tensor) -> torch.Tensor:\n" + body
    return nb


def broken_00(dest: Path) -> dict[str, dict]:
    """Write the corpus; return {file: {"score": {q: points}, "status": prefix, "message": substring, "flags": {...}}}."""
    dest.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[object, dict]] = {}
    ok = solved("00_welcome")
    cases["solved.ipynb"] = (ok, {"score": {"q1": 1.0}})
    cases["blank.ipynb"] = (nbformat.read(NOTEBOOKS / "00_welcome.ipynb", as_version=4),
                            {"score": {"q1": 0.0}, "message": "returned nothing"})
    cases["exception.ipynb"] = (_with_softmax("    raise RuntimeError('I give up')\n"),
                                {"score": {"q1": 0.0}, "message": "RuntimeError: I give up"})
    cases["infinite_loop.ipynb"] = (_with_softmax("    while True:\n        pass\n"),
                                    {"score": {"q1": 0.0}, "message": "timed out"})
    deleted = solved("00_welcome")
    del deleted.cells[answer_index(deleted, "softmax")]
    cases["deleted_cell.ipynb"] = (deleted, {"score": {"q1": 0.0}, "message": "`softmax` is not defined"})
    dup = solved("00_welcome")
    i = answer_index(dup, "softmax")
    dup.cells.insert(i + 1, copy.deepcopy(dup.cells[i]))
    dup.cells[i + 1]["id"] = "duplicated-cell"
    cases["duplicated_cell.ipynb"] = (dup, {"score": {"q1": 1.0}})
    cases["renamed.ipynb"] = (_with_softmax("    return torch.softmax(z, dim=-1)\n", name="my_softmax"),
                              {"score": {"q1": 0.0}, "message": "`softmax` is not defined"})
    cases["wrong_shape.ipynb"] = (_with_softmax("    return z.exp().sum(-1)\n"), {"score": {"q1": 0.0}, "message": "shape"})
    cases["nan_output.ipynb"] = (_with_softmax("    e = z.exp()\n    return e / e.sum(-1, keepdim=True)\n"),
                                 {"score": {"q1": 0.625}, "message": "NaN"})  # public 1/2 (25%), hidden 2/3 (75%)
    huge = solved("00_welcome")
    huge.cells[answer_index(huge, "softmax")].source += "\nfor _ in range(100_000):\n    print('spam ' * 40)\n"
    cases["huge_output.ipynb"] = (huge, {"score": {"q1": 1.0}})
    cases["mid_execution.ipynb"] = (_mid_execution(), {"score": {"q1": 1.0}})
    cases["empty.ipynb"] = (nbformat.v4.new_notebook(), {"score": {"q1": 0.0}, "status": "no code"})
    files = {}
    for fname, (nb, expected) in cases.items():
        nbformat.write(nb, dest / fname)
        files[fname] = expected
    (dest / "not_a_notebook.ipynb").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n")
    files["not_a_notebook.ipynb"] = {"score": {"q1": 0.0}, "status": "not a notebook"}
    (dest / "essay.txt").write_text("I could not get Jupyter to start, so here is my answer in words.\n")
    files["essay.txt"] = {"score": {"q1": 0.0}, "status": "not a notebook"}
    return files


def _mid_execution() -> nbformat.NotebookNode:
    """Saved while the kernel was still running: stale outputs, a busy cell, an interrupted one."""
    nb = solved("00_welcome")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, cell in enumerate(code[:3], 1):
        cell.execution_count = 10 - n  # out of order, as after re-running cells
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale output\n")]
    code[3].execution_count = None
    code[3].metadata["execution"] = {"iopub.status.busy": "2026-11-26T10:00:00.000Z"}
    code[3].outputs = [nbformat.v4.new_output("error", ename="KeyboardInterrupt", evalue="", traceback=[])]
    return nb


def uses_reference_06(dest: Path) -> dict[str, dict]:
    """Notebook 06 answered by calling metalib for q3 (flagged), q1, q1b, q2 and q2b solved, q4 blank."""
    nb = solved("06_maml_gradient", skip=("inner_step_jacobian", "g_first_order", "relative_error"))
    i = answer_index(nb, "g_maml_hvp")
    nb.cells[i].source = (
        "def hessian_vector_product(loss, theta, v):\n    return mg.hvp(loss, theta, v)\n\n\n"
        "def g_maml_hvp(inner_loss, outer_loss, theta0, alpha, k):\n"
        "    from metalib.maml_gradient import g_maml_hvp as reference\n"
        "    return reference(inner_loss, outer_loss, theta0, alpha, k)\n")
    # q2's explicit product needs q1's Jacobian, so answer q1 with the solution too
    src = _solution_sources("06_maml_gradient")["inner_step_jacobian"]
    nb.cells[answer_index(nb, "inner_step_jacobian")].source = src
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest / "uses_reference.ipynb")
    return {"uses_reference.ipynb": {"score": {"q1": 2.0, "q1b": 2.0, "q2": 3.0, "q2b": 1.0, "q3": 0.0, "q4": 0.0},
                                     "flags": {"q3": ["mg.hvp", "reference"]}}}
