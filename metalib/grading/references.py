"""Detect answers that call metalib's reference implementation instead of solving the exercise.

Every exercise is checked against `metalib`, so a submission can pass by calling the library
(``return mg.g_maml_hvp(...)``). We flag an answer function whose body uses a name bound to a
metalib import (``import metalib``, ``from metalib import maml_gradient as mg``, ``from
metalib.maml_gradient import hvp``) that the blank student stub of the same function does not
use (the stub's own helpers, such as ``inner_trajectory``, stay allowed). `metalib.checks` is
allowed: it only asserts. Flags are reported for an instructor to review. Cells are read as
IPython reads them (a ``%magic`` first line does not hide a cell from the detector).

`similar_to_library` flags, for review only (not scored 0), answers whose body is the library's
source pasted in: the normalised AST (names, constants and docstrings abstracted) of each answer
function compared with every function of the library modules the assignment is about.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable

from metalib.grading import pyast

__all__ = ["metalib_aliases", "function_uses", "reference_uses", "similar_to_library", "SIMILARITY"]

ALLOWED = {"checks"}
SIMILARITY = 0.9      # normalised-AST similarity from which an answer is flagged
MIN_NODES = 25        # shorter answers (one-liners) are too alike by nature to flag


def _python(src: str) -> str:
    """IPython syntax (magics, ``!shell``, ``x?``) turned into plain Python, as the kernel runs it."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(src)
    except Exception:
        return src


def _trees(sources: Iterable[str]) -> list[ast.Module]:
    trees = []
    for src in sources:
        for text in (src, _python(src)):
            try:
                trees.append(pyast.parse(text))
                break
            except (SyntaxError, ValueError):
                continue
    return trees


def metalib_aliases(sources: Iterable[str]) -> set[str]:
    """Names that the given cells bind to metalib modules or objects."""
    names = set()
    for tree in _trees(sources):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {(a.asname or a.name.split(".")[0]) for a in node.names if a.name.split(".")[0] == "metalib"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "metalib":
                names |= {a.asname or a.name for a in node.names if a.name not in ALLOWED}
    return names


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def function_uses(sources: Iterable[str], function: str) -> set[str] | None:
    """Dotted names used inside the *last* definition of ``function`` (None when never defined)."""
    found = None
    for tree in _trees(sources):
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
                found = node
    if found is None:
        return None
    used = set()
    for node in ast.walk(found):
        if isinstance(node, (ast.Attribute, ast.Name)):
            name = _dotted(node)
            if name:
                used.add(name)
    return used


def reference_uses(submission: list[str], stub: list[str], function: str) -> list[str]:
    """metalib names the submission's ``function`` uses and its stub does not (sorted)."""
    aliases = metalib_aliases(submission) | metalib_aliases(stub)  # imports anywhere, even in the body
    body = function_uses(submission, function) or set()
    allowed = function_uses(stub, function) or set()
    flagged = set()
    for name in body - allowed:
        parts = name.split(".")
        if parts[0] in aliases and not (len(parts) > 1 and parts[1] in ALLOWED):
            flagged.add(name)
    # keep the most specific name of each chain (mg.g_maml_hvp rather than mg)
    return sorted(n for n in flagged if not any(o != n and o.startswith(n + ".") for o in flagged))


class _Normalise(ast.NodeTransformer):
    """Names, attributes' owners, arguments and constants replaced by placeholders; docstrings dropped."""

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg="_"), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(value=type(node.value).__name__), node)

    def visit_FunctionDef(self, node):
        body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                                 and isinstance(node.body[0].value, ast.Constant)) else node.body
        node.body, node.name, node.returns, node.decorator_list = body or [ast.Pass()], "_", None, []
        self.generic_visit(node)
        return node


def _shape(fn: ast.FunctionDef) -> list[str]:
    tree = _Normalise().visit(pyast.parse(ast.unparse(fn)).body[0])
    return [type(n).__name__ + (f".{n.attr}" if isinstance(n, ast.Attribute) else "") for n in ast.walk(tree)]


def _functions(sources: Iterable[str]) -> dict[str, ast.FunctionDef]:
    found = {}
    for tree in _trees(sources):
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = node
    return found


def similar_to_library(submission: list[str], assignment, judge=None) -> dict[str, list[str]]:
    """question -> ["answer ~ metalib.module.function (similarity)"] for answers at least `SIMILARITY`
    alike (difflib ratio of normalised AST node sequences) to a function of the library modules the
    assignment's judge hides, else of the metalib modules its stub imports."""
    import difflib
    import importlib
    import inspect

    modules = sorted(judge.unavailable) if judge is not None else []
    if not modules:
        return {}
    library = {}
    for module in modules:
        for name, fn in _functions([inspect.getsource(importlib.import_module(module))]).items():
            library[f"{module}.{name}"] = _shape(fn)
    answers = _functions(submission)
    out = {}
    for q in assignment.auto_questions:
        for fname in q.functions:
            if fname not in answers:
                continue
            shape = _shape(answers[fname])
            if len(shape) < MIN_NODES:
                continue
            for lib, lib_shape in library.items():
                ratio = difflib.SequenceMatcher(None, shape, lib_shape, autojunk=False).ratio()
                if ratio >= SIMILARITY:
                    out.setdefault(q.name, []).append(f"{fname} ~ {lib} ({ratio:.2f})")
    return out
