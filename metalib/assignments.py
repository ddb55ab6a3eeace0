"""The assignment pipeline: master notebooks in solutions/ -> student notebooks in notebooks/.

Otter-Grader's ``otter assign`` reads the raw-cell markers (``# BEGIN QUESTION``,
``# BEGIN SOLUTION``, ``# BEGIN TESTS``) of each master notebook and writes a student version
(solutions replaced by ``...``, public tests stored in the notebook's metadata for
``grader.check``) and an autograder zip (all tests, hidden ones included).

`regenerate` writes the student notebooks into notebooks/ after normalising them (no outputs,
deterministic cell ids) so that regenerating twice gives identical bytes; `stale_notebooks`
lists the notebooks that differ from what the masters produce (a test fails on any).

Command line: ``python -m metalib assign [--autograder DIR] [--check]``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

__all__ = ["PROJECT", "SOLUTIONS", "NOTEBOOKS", "masters", "student_notebook", "regenerate",
           "stale_notebooks"]

PROJECT = Path(__file__).resolve().parents[1]
SOLUTIONS = PROJECT / "solutions"
NOTEBOOKS = PROJECT / "notebooks"


def masters(names: list[str] | None = None) -> list[Path]:
    """Master notebooks in solutions/, sorted; ``names`` filters by stem prefix (e.g. "01")."""
    found = sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))
    if names:
        found = [p for p in found if any(p.stem.startswith(n) for n in names)]
        if not found:
            raise ValueError(f"no master notebook in {SOLUTIONS} matches {names}")
    return found


def _normalise(path: Path) -> str:
    """Student notebook text with no outputs and deterministic cell ids (stable across runs)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    return nbformat.writes(nb) + "\n"


HIDDEN_NOTICE = ("Public tests passed. This is not your grade yet; hidden tests with other seeds, "
                 "shapes and sizes run when your work is graded.")


def with_hidden_notice(master: Path, workdir: Path) -> Path:
    """A copy of ``master`` in which the last public test of every question that has hidden tests
    carries Otter's ``success_message`` = `HIDDEN_NOTICE`, so ``grader.check`` never lets a student
    read "passed" without being told that more tests run when graded (Otter-Grader issue #138)."""
    import nbformat

    from .grading.assignment import test_config

    nb = nbformat.read(master, as_version=4)
    in_tests, public, hidden = False, [], False
    for cell in nb.cells:
        head = cell.source.strip().split("\n", 1)[0].strip().upper() if cell.cell_type == "raw" else ""
        if head == "# BEGIN TESTS":
            in_tests, public, hidden = True, [], False
        elif head == "# END TESTS":
            if hidden and public:
                public[-1].source = _add_success_message(public[-1].source)
            in_tests = False
        elif in_tests and cell.cell_type == "code":
            if test_config(cell.source)[0].get("hidden", False):
                hidden = True
            else:
                public.append(cell)
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / master.name
    nbformat.write(nb, copy)
    return copy


def _add_success_message(source: str) -> str:
    line = f"success_message: '{HIDDEN_NOTICE}'"
    if "# BEGIN TEST CONFIG" in source:
        head, rest = source.split("\n", 1)
        return f"{head}\n{line}\n{rest}"
    return f'""" # BEGIN TEST CONFIG\n{line}\n""" # END TEST CONFIG\n{source}'


def _run_otter(master: Path, out: Path) -> Path:
    """Run ``otter assign`` quietly (no PDFs, no test run: nbval runs the masters) into ``out``,
    on a copy of the master that carries the hidden-tests notice (`with_hidden_notice`)."""
    from otter.assign import main as otter_assign

    master = with_hidden_notice(master, out.parent / f"{master.stem}-master")
    buf = io.StringIO()
    logging.getLogger("otter").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            otter_assign(str(master), str(out), no_pdfs=True, no_run_tests=True)
        except Exception as err:  # re-raise with the notebook's name and otter's output
            raise RuntimeError(f"otter assign failed on {master.name}: {err}\n{buf.getvalue()[-2000:]}") from err
    return out


def student_notebook(master: Path, workdir: Path) -> tuple[str, Path | None]:
    """Assign one master into ``workdir``; return (normalised student notebook text, autograder zip)."""
    out = _run_otter(master, workdir / master.stem)
    text = _normalise(out / "student" / master.name)
    zips = sorted((out / "autograder").glob("*.zip"))
    return text, (zips[-1] if zips else None)


def regenerate(names: list[str] | None = None, *, autograder_dir: str | Path | None = None) -> list[Path]:
    """Write notebooks/NN_*.ipynb from solutions/ (and autograder zips if ``autograder_dir``).

    Returns:
        The student notebooks written.
    """
    NOTEBOOKS.mkdir(exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for master in masters(names):
            text, zip_path = student_notebook(master, Path(tmp))
            dest = NOTEBOOKS / master.name
            dest.write_text(text, encoding="utf-8")
            written.append(dest)
            if autograder_dir is not None and zip_path is not None:
                Path(autograder_dir).mkdir(parents=True, exist_ok=True)
                shutil.copy(zip_path, Path(autograder_dir) / f"{master.stem}-autograder.zip")
    return written


def stale_notebooks() -> list[str]:
    """Names of student notebooks that are missing or differ from what solutions/ produces."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for master in masters():
            text, _ = student_notebook(master, Path(tmp))
            dest = NOTEBOOKS / master.name
            if not dest.is_file() or dest.read_text(encoding="utf-8") != text:
                stale.append(master.name)
        expected = {m.name for m in masters()}
        stale += sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if p.name not in expected)
    return stale
