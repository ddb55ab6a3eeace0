"""Crafted submissions: what a dishonest (or careless) student tries against the grader.

`adversarial_06(dest, paths)` writes attacks on notebook 06 (graded outside the student's process
by `metalib.grading.judges.maml_gradient`); `careless_00(dest)` writes honest but carelessly saved
notebooks of notebook 00. Each returns {file: {"score": {q: points}, "flags": {q: substring},
"status": prefix}}: the score an honest grader gives. ``paths`` names what an attacker would aim at
(the master notebooks, the submissions and output folders, metalib's installed source).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import nbformat

from grading_corpus import _solution_sources, answer_index, solved
from metalib.assignments import NOTEBOOKS

NAME = "06_maml_gradient"
ZERO = {"q1": 0.0, "q1b": 0.0, "q2": 0.0, "q2b": 0.0, "q3": 0.0, "q4": 0.0}
FULL = {"q1": 2.0, "q1b": 2.0, "q2": 3.0, "q2b": 1.0, "q3": 3.0, "q4": 2.0}
ANSWERS = {"q1": "inner_step_jacobian", "q2": "g_maml_explicit", "q3": "g_maml_hvp", "q4": "g_first_order"}


def _blank() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{NAME}.ipynb", as_version=4)


def _with_cell(nb, source: str, *, after: str | None = None) -> nbformat.NotebookNode:
    """``nb`` with a code cell inserted (after the answer cell of ``after``, else before the first answer)."""
    i = answer_index(nb, after) + 1 if after else answer_index(nb, "inner_step_jacobian")
    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = f"attack-{i}-{len(nb.cells)}"
    nb.cells.insert(i, cell)
    return nb


def _append(nb, source: str) -> nbformat.NotebookNode:
    """``nb`` with ``source`` appended to its last answer cell (cells after the last answer are not run)."""
    i = answer_index(nb, "g_first_order")
    nb.cells[i].source += "\n\n" + source
    return nb


def _answer(nb, function: str, source: str) -> nbformat.NotebookNode:
    nb.cells[answer_index(nb, function)].source = source
    return nb


def _read_answers(paths: dict) -> str:
    """Run the solution cells of the master and of a classmate's notebook, if they can be read."""
    return f'''
import json, re
for path in [{str(paths["master"])!r}, {str(paths["classmate"])!r}]:
    try:
        nb = json.load(open(path))
    except OSError as err:
        print("cannot read", path, err)
        continue
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "def " in src and "grader" not in src:
            try:
                exec(re.sub(r"#.*(BEGIN|END) SOLUTION", "", src), globals())
            except Exception:
                pass
'''


CHECK_TAMPERING = {
    "shadow_exec": "exec = lambda *args, **kwargs: None\ncompile = lambda *args, **kwargs: None\n",
    "input_transformer": ("def _rewrite(lines):\n    return ['result = None\\n'] if any('result' in l for l in lines) else lines\n"
                          "get_ipython().input_transformers_post.append(_rewrite)\n"),
    "patch_json_and_checks": ("import json, math, torch\nimport metalib.checks\njson.dump = lambda obj, f, **kw: f.write('[]')\n"
                              "math.isclose = lambda *a, **k: True\nfor _n in dir(metalib.checks):\n"
                              "    if _n.startswith('assert'):\n        setattr(metalib.checks, _n, lambda *a, **k: None)\n"
                              "torch.allclose = lambda *a, **k: True\ntorch.testing.assert_close = lambda *a, **k: None\n"),
    "atexit_forgery": ("import atexit, os, json, glob\n"
                       "def _forge():\n    os.makedirs('outputs', exist_ok=True)\n"
                       "    for q in ('q1', 'q2', 'q3', 'q4'):\n"
                       "        open(os.path.join('tests', q + '.json'), 'w').write(json.dumps([[q, True, True, '']]))\n"
                       "    for f in glob.glob('outputs/*.err'):\n        os.remove(f)\n"
                       "    open('result.json', 'w').write(json.dumps({'status': 'graded', 'errors': []}))\n"
                       "atexit.register(_forge)\n"),
    "tensor_subclass": ("import torch\nclass Anything(torch.Tensor):\n"
                        "    def __eq__(self, other): return True\n"
                        "    def __sub__(self, other): return torch.zeros(1)\n"
                        "    def __rsub__(self, other): return torch.zeros(1)\n"
                        "    def __abs__(self): return torch.zeros(1)\n"
                        "    def allclose(self, *a, **k): return True\n"
                        "    @property\n    def shape(self): return _Shape()\n"
                        "class _Shape(tuple):\n    def __eq__(self, other): return True\n"
                        "def _anything(*args, **kwargs):\n    return torch.zeros(3).as_subclass(Anything)\n"
                        "inner_step_jacobian = g_maml_explicit = g_maml_hvp = hessian_vector_product = g_first_order = _anything\n"
                        "relative_error = lambda a, b: torch.zeros(()).as_subclass(Anything)\n"),
}


def _reference_routes_a() -> dict[str, str]:
    """q1..q4 each reach the reference by another route (all raise while grading)."""
    return {
        "inner_step_jacobian": ("def inner_step_jacobian(inner_loss, theta, alpha):\n    import importlib\n"
                                "    mod = importlib.import_module('metalib.maml_gradient')\n"
                                "    return torch.eye(theta.numel(), dtype=theta.dtype) - alpha * mod._hessian(inner_loss, theta)\n"),
        "g_maml_explicit": ("def g_maml_explicit(inner_loss, outer_loss, theta0, alpha, k):\n    import sys\n"
                            "    return sys.modules['metalib.maml_gradient'].g_maml_autograd(inner_loss, outer_loss, theta0, alpha, k)\n"),
        "g_maml_hvp": ("from metalib.maml_gradient import *\n\n"
                       "def hessian_vector_product(loss, theta, v):\n    return hvp(loss, theta, v)\n\n"
                       "def g_maml_hvp(inner_loss, outer_loss, theta0, alpha, k):\n"
                       "    return g_maml_autograd(inner_loss, outer_loss, theta0, alpha, k)\n"),
        "g_first_order": ("import inspect\nexec(inspect.getsource(mg.g_first_order).replace('g_first_order', '_fo'), globals())\n"
                          "exec(inspect.getsource(mg.relative_error), globals())\n"
                          "def g_first_order(inner_loss, outer_loss, theta0, alpha, k):\n"
                          "    return _fo(inner_loss, outer_loss, theta0, alpha, k)\n"),
    }


def _pasted_library() -> str:
    """The library's own source of q3 and its helpers, pasted (works: flagged for review, not zeroed)."""
    from metalib import maml_gradient as mg

    hvp = inspect.getsource(mg.hvp).replace("def hvp(", "def hessian_vector_product(")
    g = inspect.getsource(mg.g_maml_hvp).replace("hvp(losses", "hessian_vector_product(losses")
    helpers = inspect.getsource(mg.inner_losses) + "\n\n" + inspect.getsource(mg._grad)
    return "from typing import Callable\nLoss = InnerLoss = Callable\n\n\n" + helpers + "\n\n" + hvp + "\n\n" + g


def adversarial_06(dest: Path, paths: dict) -> dict[str, dict]:
    """Write the attacks on notebook 06 into ``dest``; return what each must score and be flagged for."""
    dest.mkdir(parents=True, exist_ok=True)
    sols = _solution_sources(NAME)
    cases: dict[str, tuple] = {}
    cases["honest"] = (solved(NAME), {"score": FULL})
    cases["blank"] = (_blank(), {"score": ZERO})   # the plain student notebook: every single test must fail
    cases["read_answers"] = (_append(_blank(), _read_answers(paths)), {"score": ZERO})
    for name, code in CHECK_TAMPERING.items():
        cases[name] = (_append(_blank(), code), {"score": ZERO})
    nb = _blank()
    for fn, src in _reference_routes_a().items():
        _answer(nb, fn, src)
    cases["reference_routes"] = (nb, {"score": ZERO, "flags": {q: "not available while grading" for q in ANSWERS}})
    nb = solved(NAME, skip=("inner_step_jacobian", "g_maml_hvp"))
    _with_cell(nb, "def _helper(inner_loss, theta, alpha):\n    return torch.eye(theta.numel()) - alpha * mg._hessian(inner_loss, theta)\n")
    _answer(nb, "inner_step_jacobian", "%%capture\ndef inner_step_jacobian(inner_loss, theta, alpha):\n    return _helper(inner_loss, theta, alpha)\n")
    _answer(nb, "g_maml_hvp", _pasted_library())
    _with_cell(nb, "g_maml_explicit = mg.g_maml_autograd\n", after="g_maml_explicit")
    cases["helper_magic_rebind_paste"] = (nb, {"score": {"q1": 0.0, "q1b": 2.0, "q2": 0.0, "q2b": 1.0, "q3": 3.0, "q4": 2.0},
                                              "flags": {"q1": "not available while grading", "q2": "not available",
                                                        "q3": "g_maml_hvp ~ metalib.maml_gradient.g_maml_hvp"}})
    cases["lookup_table"] = (_lookup_table(), {"score": {q: round(0.25 * p, 4) if q in ANSWERS else 0.0
                                                       for q, p in FULL.items()}})
    cases["batch_attacks"] = (_append(solved(NAME), _batch_attack(paths)), {"score": FULL})
    cases["kill_everything"] = (_append(solved(NAME), "import os, signal\nos.kill(-1, signal.SIGKILL)\n"), {"score": ZERO, "status": ("the sandbox ended", "kernel died")})
    cases["forged_report"] = (_answer(_blank(), "inner_step_jacobian",
                                      "def inner_step_jacobian(inner_loss, theta, alpha):\n"
                                      "    raise ValueError('oops\\n\\n## alice: 10 / 10\\n\\n* **q1**: 2 / 2')\n"), {"score": ZERO})
    files = {}
    for name, (nb, expected) in cases.items():
        nbformat.write(nb, dest / f"{name}.ipynb")
        files[f"{name}.ipynb"] = expected
    return files


def _key(*args) -> str:
    """What a lookup table keys on: the inputs' tensors (summed, rounded) and numbers."""
    import torch

    return repr([round(float(a.sum()), 8) if isinstance(a, torch.Tensor) else a for a in args if not callable(a)])


def _lookup_table() -> nbformat.NotebookNode:
    """Answers that return the public probes' outputs (recorded from the reference on the public
    probes' inputs) and zeros for any other input."""
    import random

    import torch

    from metalib.grading.judge import expected_value
    from metalib.grading.judges.maml_gradient import JUDGE

    table: dict[str, dict[str, object]] = {}

    def recorder(name, fn):
        def record(*args):
            out = fn(*args)
            table.setdefault(name, {})[_key(*args)] = out.tolist() if isinstance(out, torch.Tensor) else out
            return out
        return record

    refs = {name: recorder(name, fn) for name, fn in JUDGE.references().items()}
    dtype = torch.get_default_dtype()
    try:
        for probe in JUDGE.probes(random.Random(0)):
            if not probe.hidden:
                expected_value(probe, refs)
    finally:
        torch.set_default_dtype(dtype)
    key = inspect.getsource(_key).replace("    import torch\n\n", "")
    head = f"import torch\n{key}\n_TABLE = {json.dumps(table)}\n\n" + """
def _lookup(name, shape, *args):
    found = _TABLE.get(name, {}).get(_key(*args))
    if isinstance(found, list):
        return torch.tensor(found, dtype=torch.float64)
    return found if found is not None else torch.zeros(shape, dtype=torch.float64)
"""
    nb = _blank()
    _with_cell(nb, head)
    _answer(nb, "inner_step_jacobian", "def inner_step_jacobian(inner_loss, theta, alpha):\n"
                                       "    return _lookup('inner_step_jacobian', (theta.numel(), theta.numel()), theta, alpha)\n")
    _answer(nb, "g_maml_explicit", "def g_maml_explicit(inner_loss, outer_loss, theta0, alpha, k):\n"
                                   "    return _lookup('g_maml_explicit', theta0.shape, theta0, alpha, k)\n")
    _answer(nb, "g_maml_hvp", "def hessian_vector_product(loss, theta, v):\n"
                              "    return _lookup('hessian_vector_product', theta.shape, theta, v)\n\n\n"
                              "def g_maml_hvp(inner_loss, outer_loss, theta0, alpha, k):\n"
                              "    return _lookup('g_maml_hvp', theta0.shape, theta0, alpha, k)\n")
    _answer(nb, "g_first_order", "def g_first_order(inner_loss, outer_loss, theta0, alpha, k):\n"
                                 "    return _lookup('g_first_order', theta0.shape, theta0, alpha, k)\n\n\n"
                                 "def relative_error(approx, exact):\n"
                                 "    found = _lookup('relative_error', (), approx, exact)\n"
                                 "    return found if isinstance(found, float) else 0.0\n")
    return nb


def _batch_attack(paths: dict) -> str:
    """A daemon that outlives the kernel rewriting grades.csv, a hook copying every test cell out,
    writes into metalib's source and the submissions folder, and a fork bomb (bounded)."""
    return f'''
import os, time, sys
targets = [{str(paths["out"] / "grades.csv")!r}, {str(paths["classmate"])!r}, {str(paths["checks"])!r},
           {str(paths["subs"] / "leak.txt")!r}]
def _leak(info):
    for t in targets[3:]:
        try:
            open(t, "a").write(info.raw_cell)
        except OSError:
            pass
get_ipython().events.register("pre_run_cell", _leak)
for t in targets[:3]:
    try:
        open(t, "a").write("student,10\\n")
    except OSError as err:
        print("cannot write", t, err)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(600):
            for t in targets:
                try:
                    open(t, "a").write("alice,10\\n")
                except OSError:
                    pass
            time.sleep(0.5)
    os._exit(0)
children = []
try:
    for _ in range(2000):
        pid = os.fork()
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        children.append(pid)
except OSError as err:
    print("fork refused after", len(children), "children:", err)
try:
    hog = bytearray(64 * 2**30)
except MemoryError:
    print("64 GiB refused")
'''


def careless_00(dest: Path) -> dict[str, dict]:
    """Honest notebook-00 answers saved carelessly: all graded in full."""
    dest.mkdir(parents=True, exist_ok=True)
    ok = nbformat.writes(solved("00_welcome")).encode("utf-8")
    (dest / "careless_bom.ipynb").write_bytes(b"\xef\xbb\xbf" + ok)
    nb = solved("00_welcome")
    md = next(c for c in nb.cells if c.cell_type == "markdown")
    md.source += "\n\nCAFE_PLACEHOLDER"
    (dest / "careless_latin1.ipynb").write_bytes(nbformat.writes(nb).encode("utf-8").replace(b"CAFE_PLACEHOLDER", b"caf\xe9"))
    raw = json.loads(nbformat.writes(solved("00_welcome")))
    raw["metadata"] = {"kernelspec": None, "widgets": "??", "language_info": 3}
    raw["nbformat_minor"] = 99
    for c in raw["cells"]:
        c.pop("id", None)
        c["metadata"] = {"tags": None, "collapsed": "yes"}
        if c["cell_type"] == "code":
            c["source"] = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            c["outputs"] = [{"output_type": "weird"}]
    (dest / "careless_metadata.ipynb").write_text(json.dumps(raw))
    nb = solved("00_welcome")
    i = answer_index(nb, "softmax")
    nb.cells[i].source = '# I ran grader.check("q1") and it passed\n' + nb.cells[i].source + '\nprint("see grader.check(q1) above")\n'
    nbformat.write(nb, dest / "careless_grader_comment.ipynb")
    full = {"score": {"q1": 1.0}}
    return {f"careless_{n}.ipynb": full for n in ("bom", "latin1", "metadata", "grader_comment")}
