"""Detect answers that call metalib's reference implementation instead of solving the exercise.

Every exercise is checked against `metalib`, so a submission can pass by calling the library
(``return mg.g_maml_hvp(...)``). We flag an answer function whose body uses a name bound to a
metalib import (``import metalib``, ``from metalib import maml_gradient as mg``, ``from
metalib.maml_gradient import hvp``) that the blank student stub of the same function does not
use (the stub's own helpers, such as ``inner_trajectory``, stay allowed). `metalib.checks` is
allowed: it only asserts. Flags are reported for an instructor to review.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable

__all__ = ["metalib_aliases", "function_uses", "reference_uses"]

ALLOWED = {"checks"}


def _trees(sources: Iterable[str]) -> list[ast.Module]:
    trees = []
    for src in sources:
        try:
            trees.append(ast.parse(src))
        except SyntaxError:
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
