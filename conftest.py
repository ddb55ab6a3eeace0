"""Test-session environment: offline data, a project-local cache, quick mode for notebooks.

* ``METALIB_DATA`` defaults to ``../shared/data`` (the offline Omniglot zips beside the
  project) when that folder exists; otherwise tests needing Omniglot use what metalib finds.
* ``METALIB_CACHE`` defaults to ``.cache/`` in the project, so the decoded tensor cache is
  built once and reused across runs (CI starts clean and builds it once, ~6 s).
* ``METALIB_QUICK=1``, inherited by notebook kernels (nbval, assignment checks): every notebook
  runs in quick mode. Kernels keep Jupyter's inline matplotlib backend, so every plot is rendered.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent
_shared = PROJECT.parent / "shared" / "data"
if "METALIB_DATA" not in os.environ and (_shared / "omniglot").is_dir():
    os.environ["METALIB_DATA"] = str(_shared)
os.environ.setdefault("METALIB_CACHE", str(PROJECT / ".cache"))
os.environ.setdefault("METALIB_QUICK", "1")
