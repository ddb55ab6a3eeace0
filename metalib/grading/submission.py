"""Read a submitted notebook the way a careful human would: its code, whatever the file's quirks.

Students hand in notebooks that Jupyter itself opens but strict readers reject: a UTF-8 byte-order
mark, a stray non-UTF-8 byte in a markdown cell (a pasted character saved in Latin-1), odd or
missing metadata, a ``source`` given as a string or a list of lines. `code_cells` reads only what
grading needs (each code cell's source) and tolerates all of these; only a file that is not a
notebook at all (not JSON, no cell list) raises `NotANotebook`.

`without_grader_calls` removes Otter's own statements (``grader = otter.Notebook(...)``,
``grader.check("q1")``) line by line, so an answer cell that also mentions ``grader.check(`` in a
comment or string is kept and graded.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["NotANotebook", "code_cells", "without_grader_calls", "through_last_answer"]

MAX_BYTES = 50 * 2**20
GRADER_LINE = re.compile(r"^\s*(import\s+otter\s*|grader\s*=\s*otter\.Notebook\(.*\)\s*|"
                         r"grader\.(check|check_all|export|run_plugin|to_pdf)\(.*\)\s*)(#.*)?$")


class NotANotebook(ValueError):
    pass


def _text(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a stray byte somewhere: keep the rest
        return raw.decode("utf-8", errors="replace")


def code_cells(path: str | Path) -> list[str]:
    """The source of every code cell, in order (raises `NotANotebook` saying why)."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise NotANotebook(f"larger than {MAX_BYTES // 2**20} MiB")
    try:
        nb = json.loads(_text(path.read_bytes()))
    except json.JSONDecodeError as err:
        raise NotANotebook(f"not JSON: {err}") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if cells is None and isinstance(nb, dict) and isinstance(nb.get("worksheets"), list):  # nbformat 3
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", [])]
    if not isinstance(cells, list):
        raise NotANotebook("no list of cells")
    out = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", cell.get("input", ""))
        if isinstance(src, list):
            src = "".join(s for s in src if isinstance(s, str))
        if isinstance(src, str):
            out.append(src)
    return out


def without_grader_calls(cells: list[str]) -> list[str]:
    """Cells without Otter's statements; cells that held nothing else are dropped."""
    out = []
    for src in cells:
        lines = src.splitlines()
        kept = [line for line in lines if not GRADER_LINE.match(line)]
        if len(kept) < len(lines) and not any(l.strip() and not l.strip().startswith("#") for l in kept):
            continue
        out.append("\n".join(kept))
    return out


def through_last_answer(cells: list[str], functions: set[str]) -> list[str]:
    """The cells up to the last one that defines an answer function (experiments after it cannot
    change the grade and are not run)."""
    from .assignment import defined_functions

    last = max((i for i, src in enumerate(cells) if functions & set(defined_functions(src))), default=len(cells) - 1)
    return cells[:last + 1]
