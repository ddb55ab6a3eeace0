"""What an assignment asks: its questions, points, answer functions and tests, read from the master.

The master notebook in solutions/ carries Otter-Grader's raw-cell markers (``# BEGIN QUESTION``
with a YAML config, ``# BEGIN SOLUTION``, ``# BEGIN TESTS``; a test cell may start with a
``# BEGIN TEST CONFIG`` block saying ``hidden: true``). `Assignment.from_master` turns them into
plain data for `metalib.grading.runner`, which grades submissions without Docker.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from metalib.grading import pyast

__all__ = ["TestCode", "Question", "Assignment", "defined_functions", "test_config"]

CONFIG_RE = re.compile(r'^\s*"""\s*# BEGIN TEST CONFIG\n(.*?)"""\s*# END TEST CONFIG\n?', re.S)


@dataclass(frozen=True)
class TestCode:
    """One test case: ``source`` defines ``test_*`` and calls it (Otter's exception-based format)."""
    name: str
    source: str
    hidden: bool


@dataclass(frozen=True)
class Question:
    name: str
    points: float
    manual: bool
    functions: tuple[str, ...]  # names the answer must define (from the solution cells)
    tests: tuple[TestCode, ...]


@dataclass(frozen=True)
class Assignment:
    name: str
    master: Path
    questions: tuple[Question, ...] = field(default=())

    @property
    def auto_questions(self) -> tuple[Question, ...]:
        return tuple(q for q in self.questions if not q.manual)

    @property
    def functions(self) -> set[str]:
        return {f for q in self.questions for f in q.functions}

    @classmethod
    def from_master(cls, master: str | Path) -> "Assignment":
        """Parse a master notebook (raises ValueError naming the cell when a marker is malformed)."""
        import nbformat

        master = Path(master)
        nb = nbformat.read(master, as_version=4)
        questions, current, mode = [], None, None
        for i, cell in enumerate(nb.cells):
            src = cell.source.strip()
            if cell.cell_type == "raw":
                head = src.split("\n", 1)[0].strip().upper()
                if head == "# BEGIN QUESTION":
                    cfg = yaml.safe_load(src.split("\n", 1)[1]) if "\n" in src else {}
                    if not isinstance(cfg, dict) or "name" not in cfg:
                        raise ValueError(f"{master.name} cell {i}: BEGIN QUESTION needs a 'name:' line")
                    current = {"name": str(cfg["name"]), "points": float(cfg.get("points", 1)),
                               "manual": bool(cfg.get("manual", False)), "functions": [], "tests": []}
                elif head == "# END QUESTION" and current is not None:
                    questions.append(Question(current["name"], current["points"], current["manual"],
                                              tuple(current["functions"]), tuple(current["tests"])))
                    current = None
                elif head in ("# BEGIN SOLUTION", "# BEGIN TESTS"):
                    mode = head.split()[-1].lower()
                elif head in ("# END SOLUTION", "# END TESTS"):
                    mode = None
            elif cell.cell_type == "code" and current is not None:
                if mode == "solution":
                    current["functions"] += defined_functions(cell.source)
                elif mode == "tests":
                    current["tests"].append(_test_code(cell.source, len(current["tests"])))
        return cls(master.stem, master, tuple(questions))


def test_config(source: str) -> tuple[dict, str]:
    """(the ``# BEGIN TEST CONFIG`` block as a dict, the test code after it) of a test cell."""
    match = CONFIG_RE.match(source)
    if not match:
        return {}, source
    return (yaml.safe_load(match.group(1)) or {}), source[match.end():]


def _test_code(source: str, index: int) -> TestCode:
    cfg, body = test_config(source)
    name = re.search(r"^def (\w+)", body, re.M)
    return TestCode(name.group(1) if name else f"test_{index}", body, bool(cfg.get("hidden", False)))


def defined_functions(source: str) -> list[str]:
    """Top-level ``def`` names in a code cell (a regex fallback when the cell does not parse)."""
    try:
        tree = pyast.parse(source)
    except SyntaxError:
        return re.findall(r"^def (\w+)\s*\(", source, re.M)
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
