"""The grader's worker threads parse student cells; on CPython 3.11 two concurrent ``ast.parse`` calls
can fail with ``SystemError: AST constructor recursion depth mismatch`` (gh-106905), which failed a
correct submission in CI. ``metalib.grading.pyast.parse`` serialises them."""

import re
import threading
import time
from pathlib import Path

import metalib.grading
from metalib.grading import pyast

GRADING = Path(metalib.grading.__file__).parent


def test_every_parse_in_the_grader_goes_through_the_lock():
    bare = [f"{p.relative_to(GRADING)}:{i}" for p in sorted(GRADING.rglob("*.py")) if p.name != "pyast.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"(?<![\w.])ast\.parse\(", line)]
    assert not bare, f"use metalib.grading.pyast.parse (thread-safe) instead of ast.parse at {bare}"


class _Finaliser:
    """Garbage whose finaliser runs Python code, so a collection inside a parse can switch threads."""

    def __del__(self):
        time.sleep(0.0002)


def test_parses_from_threads_with_finalisers_running_never_raise():
    source = (GRADING / "folder.py").read_text()
    errors, done = [], threading.Event()

    def churn():
        while not done.is_set():
            g = _Finaliser()
            g.self = g  # a cycle: freed by the collector, which runs __del__
            del g
            time.sleep(0.001)

    def parse_many():
        for _ in range(40):
            try:
                pyast.parse(source)
            except SystemError as e:  # pragma: no cover - the bug this guards against
                errors.append(e)

    workers = [threading.Thread(target=parse_many) for _ in range(3)]
    churner = threading.Thread(target=churn)
    churner.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    churner.join()
    assert not errors, f"{len(errors)} parses failed: {errors[0]}"
