"""``ast.parse`` that is safe to call from the grader's worker threads.

``grade_folder`` grades submissions in a thread pool, and each worker parses student cells
(``references``, ``assignment``, ``judge``). On CPython 3.11 the AST constructor keeps one
recursion counter per interpreter; when a garbage collection inside ``ast.parse`` runs a Python
finalizer, the GIL can pass to another thread that parses too, and the first parse then fails with
``SystemError: AST constructor recursion depth mismatch`` (CPython issue gh-106905). A correct
submission must never lose marks to that, so every parse in ``metalib.grading`` goes through
:func:`parse`, which holds one process-wide re-entrant lock. Parsing is milliseconds per cell;
the lock costs nothing measurable next to running a notebook.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.RLock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    """``ast.parse(source, filename, mode)``, one thread at a time."""
    with _LOCK:
        return ast.parse(source, filename, mode)
