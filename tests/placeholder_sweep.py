"""Run every test of an assignment (public and hidden) against the solution, placeholder answers and
hand-written variants, in one Python namespace per notebook (no kernel: fast enough for every CI run).

The namespace holds what the answer functions need from the notebook: the top-level imports, function
and class definitions of its code cells up to the last answer (experiments, prints and plots are left
out), with the master's solutions filled in. A *placeholder* replaces every function of a question by
one that returns something of the right kind without doing the work: zeros, ones, noise or a constant
shaped like the solution's output, the identity matrix (square outputs), the first input unchanged, or
nothing. It computes the solution's output on copies of the arguments (a copied generator, a deep-copied
policy or environment) only to learn its shape and dtype, so it neither consumes the caller's random
numbers nor records anything in the caller's objects, and it never raises (a real placeholder does not
validate its input). `variant` instead runs source code that redefines some functions.

For an assignment with a judge (`metalib.grading.judge`), each outcome list also holds the judge's
probes of the question (hidden inputs drawn from a fixed seed), run in the same namespace, their
outputs round-tripped through ``torch.save``/``torch.load(weights_only=True)`` and judged as the
grader judges them: placeholders must fail the probes too.
"""
from __future__ import annotations

import ast
import copy
import io
import random
from dataclasses import dataclass
from functools import lru_cache

import torch

from grading_corpus import solved
from metalib.assignments import SOLUTIONS
from metalib.grading.assignment import Assignment, Question
from metalib.grading.judge import compare, expected_value, judge_for
from metalib.grading.submission import through_last_answer, without_grader_calls

PLACEHOLDERS = ("zeros", "ones", "noise", "constant", "identity", "input", "nothing")
_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Outcome:
    test: str
    hidden: bool
    passed: bool
    message: str


class NotApplicable(Exception):
    """This placeholder does not fit the question (e.g. the identity for a non-square output)."""


@lru_cache(maxsize=None)
def assignment(name: str) -> Assignment:
    return Assignment.from_master(SOLUTIONS / f"{name}.ipynb")


def definitions(name: str) -> str:
    """The notebook's imports and definitions (solutions filled in), up to its last answer cell."""
    nb = solved(name)
    cells = through_last_answer(without_grader_calls([c.source for c in nb.cells if c.cell_type == "code"]),
                                assignment(name).functions)
    kept = []
    for src in cells:
        tree = ast.parse(src)
        kept += [ast.get_source_segment(src, n) for n in tree.body if isinstance(n, _KEEP) or _sets_dtype(n)]
    return "\n\n".join(kept) + "\n"


def _sets_dtype(node: ast.stmt) -> bool:
    """``torch.set_default_dtype(...)`` (notebook 06 works in float64, and its answers rely on it)."""
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "torch.set_default_dtype")


def namespace(name: str) -> dict:
    ns = {"__name__": f"placeholder_{name}"}
    exec(compile(definitions(name), f"<{name} definitions>", "exec"), ns)
    return ns


def run_tests(ns: dict, question: Question, ctx: dict | None = None) -> list[Outcome]:
    return _run_tests(ns, question, ctx)


def _run_tests(ns: dict, question: Question, ctx: dict | None = None) -> list[Outcome]:
    """Every test of ``question`` (public and hidden) in ``ns``; restores torch's global state after each.
    ``ctx["test"]`` names the test running (placeholders cache the solution's outputs per test and call)."""
    out = []
    ctx = {} if ctx is None else ctx
    for t in question.tests:
        ctx.update(test=t.name, calls={})
        state, dtype, threads = torch.random.get_rng_state(), torch.get_default_dtype(), torch.get_num_threads()
        try:
            exec(compile(t.source, f"<{question.name} {t.name}>", "exec"), ns)
            out.append(Outcome(t.name, t.hidden, True, ""))
        except Exception as err:  # noqa: BLE001 - every failure is an outcome
            out.append(Outcome(t.name, t.hidden, False, f"{type(err).__name__}: {err}".strip()))
        finally:
            torch.random.set_rng_state(state)
            torch.set_default_dtype(dtype)
            torch.set_num_threads(threads)
    return out


@lru_cache(maxsize=None)
def judged(name: str) -> tuple[list, dict]:
    """(the judge's probes, each under the question that defines its function; their expected values),
    hidden inputs drawn from seed 0; ([], {}) for an assignment without a judge."""
    from metalib.grading.folder import _by_function

    judge = judge_for(name)
    if judge is None:
        return [], {}
    probes, references, dtype = judge.probes(random.Random(0)), judge.references(), torch.get_default_dtype()
    try:
        expected = {p.name: expected_value(p, references) for p in probes}
    finally:
        torch.set_default_dtype(dtype)
    return _by_function(probes, assignment(name), references), expected


def run_probes(ns: dict, name: str, question: Question, ctx: dict | None = None) -> list[Outcome]:
    """The judge's probes of ``question`` run in ``ns``, their outputs judged as the grader does."""
    out = []
    ctx = {} if ctx is None else ctx
    probes, expected = judged(name)
    for p in (p for p in probes if p.question == question.name):
        ctx.update(test=f"probe {p.name}", calls={})
        state, dtype, threads = torch.random.get_rng_state(), torch.get_default_dtype(), torch.get_num_threads()
        try:
            local = dict(ns)
            exec(compile(p.code, f"<check {p.name}>", "exec"), local)
            buffer = io.BytesIO()
            torch.save(local["result"], buffer)
            buffer.seek(0)
            got = torch.load(buffer, weights_only=True)
            if p.check is not None:
                p.check(got, expected[p.name])
            else:
                compare(got, expected[p.name], name=p.name, atol=p.atol, rtol=p.rtol)
            out.append(Outcome(f"probe {p.name}", p.hidden, True, ""))
        except Exception as err:  # noqa: BLE001 - every failure is an outcome
            out.append(Outcome(f"probe {p.name}", p.hidden, False, f"{type(err).__name__}: {err}".strip()))
        finally:
            torch.random.set_rng_state(state)
            torch.set_default_dtype(dtype)
            torch.set_num_threads(threads)
    return out


def _copy(x):
    """A copy that shares tensors (and their graphs) but not generators, modules or other objects."""
    if isinstance(x, torch.Tensor) or callable(x) and not isinstance(x, torch.nn.Module):
        return x
    if isinstance(x, torch.Generator):
        g = torch.Generator(device=x.device)
        g.set_state(x.get_state())
        return g
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_copy(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_copy(v) for v in x)
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    try:
        return copy.deepcopy(x)
    except Exception:  # noqa: BLE001 - not copyable: share it
        return x


def _leaf(kind: str, x):
    if isinstance(x, torch.Tensor):
        if kind == "zeros":
            return torch.zeros_like(x)
        if kind == "ones":
            return torch.ones_like(x)
        if kind == "noise":
            if x.is_floating_point():
                return torch.randn_like(x)
            lo, hi = (int(x.min()), int(x.max()) + 1) if x.numel() else (0, 1)
            return torch.randint_like(x, lo, max(hi, lo + 2))
        if kind == "constant":
            if x.is_floating_point():
                return torch.full_like(x, float(x.detach().mean()) if x.numel() > 1 else 0.5)
            return torch.ones_like(x)
        if kind == "identity":
            if x.dim() == 2 and x.shape[0] == x.shape[1]:
                return torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
            raise NotApplicable
    if isinstance(x, bool):
        return x
    if isinstance(x, (set, frozenset)):  # a choice among names (a prediction question)
        if kind == "identity":
            raise NotApplicable
        return type(x)() if kind == "zeros" else type(x)([kind])
    if isinstance(x, (int, float)):
        if kind == "identity":
            raise NotApplicable
        return {"zeros": 0.0, "ones": 1.0, "noise": random.gauss(0.0, 3.0), "constant": 0.5}[kind]
    return x


def _map(kind: str, x):
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_map(kind, v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_map(kind, v) for v in x)
    if isinstance(x, dict):
        return {k: _map(kind, v) for k, v in x.items()}
    return _leaf(kind, x)


def _is_data(x) -> bool:
    if isinstance(x, (torch.Tensor, int, float)) and not isinstance(x, bool):
        return True
    if isinstance(x, dict):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x)
    return False


def placeholder(kind: str, fn: str, ns: dict, functions: tuple[str, ...], applied: list, ctx: dict, cache: dict):
    """A stand-in for the solution ``ns[fn]`` of the given kind (see the module docstring); appends to
    ``applied`` each time the kind fitted the output (the identity fits square matrices only, else: None).
    The solution's output for the n-th call in a test is computed once and reused by the other kinds."""
    originals = {f: ns[f] for f in functions}

    def fake(*args, **kwargs):
        if kind == "nothing":
            return None
        if kind == "input":
            return next((a for a in args if _is_data(a)), None)
        n = ctx["calls"][fn] = ctx["calls"].get(fn, 0) + 1
        key = (ctx["test"], fn, n)
        if key not in cache:
            current = {f: ns[f] for f in functions}
            ns.update(originals)  # the solution may call the question's other functions
            try:
                cache[key] = originals[fn](*_copy(args), **_copy(kwargs))
            except Exception:  # noqa: BLE001 - a placeholder does not validate
                cache[key] = None
            finally:
                ns.update(current)
        out = cache[key]
        if out is None:
            return None
        try:
            fitted = _map(kind, out)
        except NotApplicable:
            return None
        applied.append(kind)
        return fitted
    return fake


def sweep(name: str, question: Question, variants: dict[str, str]) -> dict[str, list[Outcome]]:
    """{label: outcomes} for the solution ("solution"), each placeholder ("placeholder: zeros", ...) and each
    source variant ("variant: <label>"), each started from the solutions."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        return _sweep(namespace(name), question, variants, name)
    finally:  # the notebook's definitions may set them
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def _sweep(ns: dict, question: Question, variants: dict[str, str], name: str) -> dict[str, list[Outcome]]:
    originals = {f: ns[f] for f in question.functions}

    def run_tests(ns, question, ctx=None):  # Otter's tests, then the judge's probes
        return _run_tests(ns, question, ctx) + run_probes(ns, name, question, ctx)

    results = {"solution": run_tests(ns, question)}
    ctx, cache = {}, {}
    for kind in PLACEHOLDERS:
        applied: list = []
        ns.update({f: placeholder(kind, f, ns, question.functions, applied, ctx, cache) for f in question.functions})
        try:
            outcomes = run_tests(ns, question, ctx)
        finally:
            ns.update(originals)
        if kind == "identity" and not applied:
            continue  # no function of this question returns a square matrix
        results[f"placeholder: {kind}"] = outcomes
    for label, src in variants.items():
        exec(compile(src, f"<variant {label}>", "exec"), ns)
        try:
            results[f"variant: {label}"] = run_tests(ns, question)
        finally:
            ns.update(originals)
    return results
