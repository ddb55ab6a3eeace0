"""Test-session environment: offline data, a project-local cache, quick mode for notebooks.

* ``METALIB_DATA`` defaults to ``../shared/data`` (the offline Omniglot zips beside the
  project) when that folder exists; otherwise tests needing Omniglot use what metalib finds.
* ``METALIB_CACHE`` defaults to ``.cache/`` in the project, so the decoded tensor cache is
  built once and reused across runs (CI starts clean and builds it once, ~6 s).
* ``METALIB_QUICK=1``, inherited by notebook kernels (nbval, assignment checks): every notebook
  runs in quick mode. Kernels keep Jupyter's inline matplotlib backend, so every plot is rendered.
* ``OMP_NUM_THREADS=1`` (unless set), inherited by the kernels too: one torch thread per process.
* The longest test files run first: `make test` hands whole files to its pytest-xdist processes in
  collection order (``--dist loadfile --no-loadscope-reorder``), so a long file started last would
  leave the other process idle at the end (measured: the grader's files take 2-4 minutes each).
"""
from __future__ import annotations

import os
from pathlib import Path

# test files that take minutes (they run the sandboxed grader or install an environment), longest first
LONG_FILES = ("tests/test_grading.py", "tests/test_grading_sandbox.py", "tests/test_assignments.py",
              "tests/test_gradescope.py", "tests/test_alternatives.py", "tests/test_judges.py")

PROJECT = Path(__file__).resolve().parent
_shared = PROJECT.parent / "shared" / "data"
if "METALIB_DATA" not in os.environ and (_shared / "omniglot").is_dir():
    os.environ["METALIB_DATA"] = str(_shared)
os.environ.setdefault("METALIB_CACHE", str(PROJECT / ".cache"))
os.environ.setdefault("METALIB_QUICK", "1")
# One OpenMP thread per process (the test processes and every kernel they start), unless set: two pytest
# processes with two torch threads each, beside the grader's kernels, spin-waited on 2 cores. Measured on
# four library test files with `-n 2`: 127 s and 238 CPU-seconds with two threads, 107 s and 64 with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Move the files of ``LONG_FILES`` to the front, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
