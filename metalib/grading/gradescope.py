"""One autograder for Gradescope: the same sandboxed grader, packed in a zip that installs itself.

``python -m metalib.grading.gradescope build --out autograder [NAMES]`` (``make autograder``) writes
``autograder/NN_name-gradescope.zip`` per master notebook. Gradescope unpacks it into
``/autograder/source``, runs ``setup.sh`` once when it builds the image (Ubuntu, as root, with
internet), then runs ``run_autograder`` for every submission, which grades the student's notebook in
``/autograder/submission`` with `metalib.grading.Grading` (bubblewrap sandbox, checks outside the
student's process) and writes ``/autograder/results/results.json`` in Gradescope's format
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): public tests visible at once,
hidden tests after the grades are published.

The zip holds everything it needs: a ``metalib`` wheel of this project, the master notebook (hidden
tests; the sandbox never sees it), the student notebook (the stub, so that its own helpers are not
flagged), the shipped checkpoints, and the two scripts. ``setup.sh`` installs bubblewrap, a
virtual environment with the pinned CPU ``torch`` (``TORCH_VERSION``) and the wheel, downloads
Omniglot and decodes its cache. Environment variables let a test run it off Gradescope:
``METALIB_AG_ROOT`` (instead of ``/autograder``), ``METALIB_AG_PYTHON`` (the interpreter for the
virtual environment), ``METALIB_AG_TORCH_INDEX`` (pip options for torch; empty: the default index).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .assignment import Assignment
from .folder import HIDDEN_WEIGHT, Grading, StudentResult

__all__ = ["build", "results_json", "grade_submission_dir", "TORCH_VERSION", "main"]

TORCH_VERSION = "2.13.0"
TORCH_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

SETUP = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu, with internet).
set -euo pipefail
ROOT="${{METALIB_AG_ROOT:-/autograder}}"
SRC="$ROOT/source"
PY="${{METALIB_AG_PYTHON:-python3.11}}"
if ! command -v bwrap >/dev/null 2>&1 || ! command -v "$PY" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap python3.11 python3.11-venv >/dev/null
fi
"$PY" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --quiet --upgrade pip
"$ROOT/venv/bin/python" -m pip install --quiet "torch=={torch}" ${{METALIB_AG_TORCH_INDEX-{index}}}
"$ROOT/venv/bin/python" -m pip install --quiet "$SRC"/wheels/*.whl
export METALIB_DATA="${{METALIB_DATA:-$ROOT/data}}" METALIB_CACHE="${{METALIB_CACHE:-$ROOT/cache}}"
"$ROOT/venv/bin/python" -m metalib download omniglot
"$ROOT/venv/bin/python" -c "import metalib; metalib.load_omniglot()"
echo "metalib autograder for {name} installed in $ROOT/venv"
"""

RUN = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission: the student's files are in $ROOT/submission.
set -euo pipefail
ROOT="${{METALIB_AG_ROOT:-/autograder}}"
export METALIB_DATA="${{METALIB_DATA:-$ROOT/data}}" METALIB_CACHE="${{METALIB_CACHE:-$ROOT/cache}}"
export METALIB_CHECKPOINTS="$ROOT/source/checkpoints"
mkdir -p "$ROOT/results"
exec "$ROOT/venv/bin/python" -m metalib.grading.gradescope run --master "$ROOT/source/assignment/{name}.ipynb" \
  --stub "$ROOT/source/assignment/student/{name}.ipynb" --submission "$ROOT/submission" \
  --results "$ROOT/results/results.json"
"""


def _wheel(dest: Path) -> Path:
    from ..assignments import PROJECT

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "-w", str(dest), str(PROJECT)], capture_output=True, text=True)
    wheels = sorted(dest.glob("metalib-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(f"could not build the metalib wheel: {proc.stderr[-800:]}")
    return wheels[-1]


def build(master: str | Path, out: str | Path, *, wheel: Path | None = None) -> Path:
    """Write ``out/<master stem>-gradescope.zip``; return its path."""
    from ..assignments import NOTEBOOKS
    from ..checkpoint import checkpoint_dir

    master, out = Path(master), Path(out)
    name = master.stem
    student = NOTEBOOKS / master.name
    if not student.is_file():
        raise FileNotFoundError(f"{student} is missing: run `python -m metalib assign` first")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or _wheel(Path(tmp))
        zip_path = out / f"{name}-gradescope.zip"
        with zipfile.ZipFile(zip_path.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as z:
            for arc, text in [("setup.sh", SETUP.format(torch=TORCH_VERSION, index=TORCH_INDEX, name=name)),
                              ("run_autograder", RUN.format(name=name))]:
                info = zipfile.ZipInfo(arc)
                info.external_attr = 0o755 << 16
                z.writestr(info, text)
            z.write(wheel, f"wheels/{wheel.name}")
            z.write(master, f"assignment/{master.name}")
            z.write(student, f"assignment/student/{master.name}")
            for ckpt in sorted(checkpoint_dir().glob("*.pt")):
                z.write(ckpt, f"checkpoints/{ckpt.name}")
        os.replace(zip_path.with_suffix(".tmp"), zip_path)
    return zip_path


def results_json(result: StudentResult, assignment: Assignment) -> dict:
    """Gradescope's results: one entry per test, worth its share of the question's points (public tests
    1 - `HIDDEN_WEIGHT` of them, hidden ones `HIDDEN_WEIGHT`, as `folder.score`); hidden tests are shown
    after publication. A flagged answer (the library called instead of solved) scores 0."""
    tests = []
    for q in assignment.auto_questions:
        rows = result.tests.get(q.name, [])
        groups = {h: [r for r in rows if bool(r[1]) == h] for h in (False, True)}
        both = all(groups.values())
        flagged = result.flags.get(q.name, [])
        for r in rows:
            share = (HIDDEN_WEIGHT if r[1] else 1 - HIDDEN_WEIGHT) if both else 1.0
            worth = round(q.points * share / len(groups[bool(r[1])]), 4)
            output = r[3] or ("passed" if r[2] else "failed")
            if flagged:
                output = f"scored 0: the answer uses {', '.join(flagged)} instead of solving. " + output
            tests.append({"name": f"{q.name}: {r[0]}" + (" (hidden)" if r[1] else ""),
                          "score": worth if (r[2] and not flagged) else 0.0, "max_score": worth,
                          "visibility": "after_published" if r[1] else "visible", "output": output})
    summary = f"Status: {result.status}."
    if result.errors:
        summary += " Cells that raised: " + "; ".join(result.errors[:5])
    return {"tests": tests, "output": summary, "visibility": "visible", "stdout_visibility": "hidden"}


def grade_submission_dir(submission: Path, master: Path, *, stub: Path | None = None, timeout: int = 60,
                         submission_timeout: int = 900) -> tuple[StudentResult, Assignment]:
    """Grade the one notebook in ``submission`` (the master's file name preferred)."""
    assignment = Assignment.from_master(master)
    notebooks = sorted(p for p in Path(submission).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    named = [p for p in notebooks if p.name == master.name]
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb in the submission ({submission}): upload your {master.name}")
    grading = Grading(assignment, timeout=timeout, submission_timeout=submission_timeout, stub=stub)
    try:
        return grading.grade((named or notebooks)[0]), assignment
    finally:
        grading.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalib.grading.gradescope", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a Gradescope autograder zip per master notebook")
    b.add_argument("names", nargs="*", help="master notebook prefixes (default: all)")
    b.add_argument("--out", default="autograder")
    r = sub.add_parser("run", help="grade /autograder/submission (what run_autograder calls)")
    r.add_argument("--master", required=True, type=Path)
    r.add_argument("--stub", type=Path)
    r.add_argument("--submission", required=True, type=Path)
    r.add_argument("--results", required=True, type=Path)
    r.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args(argv)
    if args.command == "build":
        from ..assignments import masters

        with tempfile.TemporaryDirectory() as tmp:
            wheel = _wheel(Path(tmp))
            for m in masters(args.names or None):
                print(f"wrote {build(m, args.out, wheel=wheel)}")
        return 0
    try:
        result, assignment = grade_submission_dir(args.submission, args.master, stub=args.stub, timeout=args.timeout)
        data = results_json(result, assignment)
    except FileNotFoundError as err:
        data = {"score": 0.0, "output": str(err), "tests": []}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, args.results)
    print(data.get("output", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
