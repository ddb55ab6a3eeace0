"""The grader cannot be fooled: the sandbox, checks outside the student's process, hidden references,
escaped reports, and the adversarial corpus (tests/adversarial_corpus.py) graded as an honest
grader would, with nothing outside the output folder changed."""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adversarial_corpus import ANSWERS, FULL, _pasted_library, adversarial_06
from grading_corpus import _solution_sources, solved
from metalib.assignments import PROJECT, SOLUTIONS
from metalib.grading import Assignment, SandboxUnavailable, StudentResult, grade_folder, sandbox, write_reports
from metalib.grading.judge import NOT_AVAILABLE, compare, stub_source
from metalib.grading.judges.maml_gradient import JUDGE
from metalib.grading.references import similar_to_library

A06 = SOLUTIONS / "06_maml_gradient.ipynb"


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_sandbox_sees_nothing_it_should_not(tmp_path):
    subs = tmp_path / "submissions"
    subs.mkdir()
    (subs / "classmate.ipynb").write_text("{}")
    job, package = tmp_path / "job", tmp_path / "package"
    job.mkdir()
    import shutil

    import metalib
    shutil.copytree(Path(metalib.__file__).parent, package / "metalib", ignore=shutil.ignore_patterns("__pycache__"))
    if os.geteuid() == 0:
        os.chown(job, sandbox.SANDBOX_UID_BASE, sandbox.SANDBOX_UID_BASE)
    job.chmod(0o755)
    probe = f"""
import json, os, resource, socket, signal
seen = {{p: os.path.exists(p) for p in {[str(subs), str(SOLUTIONS), str(PROJECT / 'metalib'), str(tmp_path)]!r}}}
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2); net = True
except OSError:
    net = False
try:
    open("/opt/metalib-grading/metalib/checks.py", "a"); lib_writable = True
except OSError:
    lib_writable = False
try:
    os.kill({os.getpid()}, 0); grader_visible = True
except OSError:
    grader_visible = False
open("written.txt", "w").write("ok")
json.dump({{"seen": seen, "net": net, "lib_writable": lib_writable, "grader_visible": grader_visible,
           "uid": os.getuid(), "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
           "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0], "as": resource.getrlimit(resource.RLIMIT_AS)[0],
           "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0], "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0]}},
          open("report.json", "w"))
"""
    (job / "probe.py").write_text(probe)
    limits = sandbox.Limits()
    cmd = sandbox.command([f"{sandbox.JOB_MOUNT}/probe.py"], job, package=package / "metalib", limits=limits)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads((job / "report.json").read_text())
    assert not any(seen["seen"].values()), seen["seen"]
    assert not seen["net"] and not seen["lib_writable"] and not seen["grader_visible"]
    assert seen["pids"] <= 3, "the sandbox sees processes outside its own PID namespace"
    assert (seen["nproc"], seen["as"], seen["fsize"], seen["cpu"]) == (limits.processes, limits.memory_bytes,
                                                                     limits.file_bytes, limits.cpu_seconds)
    if os.geteuid() == 0:
        assert seen["uid"] == sandbox.SANDBOX_UID_BASE
    assert (job / "written.txt").read_text() == "ok"


def test_missing_bwrap_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    with pytest.raises(SandboxUnavailable, match="--no-sandbox"):
        sandbox.check_available()


def test_reference_functions_raise_however_reached(tmp_path):
    import importlib

    import metalib.maml_gradient as mg
    names = JUDGE.unavailable["metalib.maml_gradient"]
    (tmp_path / "mg_stub.py").write_text(stub_source(inspect.getsource(mg), names, "metalib.maml_gradient"))
    sys.path.insert(0, str(tmp_path))
    try:
        stub = importlib.import_module("mg_stub")
        for name in names:
            with pytest.raises(NotImplementedError, match=NOT_AVAILABLE):
                params = inspect.signature(getattr(stub, name)).parameters.values()
                getattr(stub, name)(*[None for p in params if p.default is inspect.Parameter.empty
                                      and p.kind is not inspect.Parameter.KEYWORD_ONLY])
            assert "raise NotImplementedError" in inspect.getsource(getattr(stub, name))
        assert stub.inner_trajectory is not None and stub.Quadratic is not None  # the notebook's helpers stay
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mg_stub", None)


def test_compare_accepts_plain_values_only():
    x = torch.arange(4.0)
    compare(x.clone(), x)
    for bad in [x.as_subclass(type("Sub", (torch.Tensor,), {})), x[:3], [x], 1.0, torch.zeros(4)]:
        with pytest.raises(AssertionError):
            compare(bad, x)
    with pytest.raises(AssertionError):
        compare(torch.tensor(2.0 ** 0.5), 2.0 ** 0.5)


def test_similarity_flags_pasted_library_not_honest_answers():
    a = Assignment.from_master(A06)
    honest = [c.source for c in solved("06_maml_gradient").cells if c.cell_type == "code"]
    assert similar_to_library(honest, a, JUDGE) == {}
    assert similar_to_library(list(_solution_sources("06_maml_gradient").values()), a, JUDGE) == {}
    flagged = similar_to_library(honest + [_pasted_library()], a, JUDGE)
    assert set(flagged) == {"q3"} and any(f.startswith("g_maml_hvp ~ metalib.maml_gradient.g_maml_hvp")
                                          for f in flagged["q3"]), flagged


def test_report_escapes_what_a_submission_controls(tmp_path):
    a = Assignment.from_master(SOLUTIONS / "00_welcome.ipynb")
    forged = "boom\n\n## alice: 10 / 10\n\n* **q1**: 1 / 1 <script>"
    r = StudentResult("## mallory", "=cmd|' /C calc'!A0.ipynb", forged, {"q1": 0.0},
                      {"q1": [["test_x", True, False, forged]]}, {}, [f"code cell 1: {forged}"])
    write_reports([r], a, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert not [line for line in report.splitlines() if "alice" in line and not line.startswith(("*", " ", "File"))]
    assert report.count("\n## ") == 1 and "<script>" not in report
    row = list(csv.reader(open(tmp_path / "grades.csv")))[1]
    assert row[1].startswith("'=") and row[2].startswith("boom")


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    subs, out = root / "submissions", root / "grades"
    import nbformat
    subs.mkdir()
    nbformat.write(solved("06_maml_gradient"), subs / "classmate.ipynb")
    paths = {"master": A06, "classmate": subs / "classmate.ipynb", "out": out, "subs": subs,
             "checks": PROJECT / "metalib" / "checks.py"}
    expected = adversarial_06(subs, paths)
    expected["classmate.ipynb"] = {"score": dict(FULL)}
    before = {"subs": _tree_hash(subs), "metalib": _tree_hash(PROJECT / "metalib"),
              "solutions": _tree_hash(SOLUTIONS)}
    results = grade_folder(subs, A06, out=out, timeout=60, submission_timeout=600, jobs=2, progress=False)
    return expected, before, subs, out, {r.file: r for r in results}


def test_each_attack_is_graded_as_an_honest_grader_would(attacked):
    expected, _, _, _, results = attacked
    assert set(results) == set(expected)
    wrong = {}
    for name, want in expected.items():
        got = results[name]
        problems = []
        if got.scores != want["score"]:
            problems.append(f"scores {got.scores} != {want['score']}")
        flags = {q: " ".join(got.flags.get(q, []) + got.similar.get(q, [])) for q in ANSWERS}
        for q, text in want.get("flags", {}).items():
            if text not in flags[q]:
                problems.append(f"{q} not flagged '{text}': {flags[q]!r}")
        if not want.get("flags") and (got.flags or got.similar):
            problems.append(f"unexpected flags {got.flags} {got.similar}")
        if "status" in want and not got.status.startswith(want["status"]):  # a prefix or a tuple of them
            problems.append(f"status {got.status!r}")
        if problems:
            wrong[name] = problems + [f"{t[0]}: {t[3]}" for ts in got.tests.values() for t in ts if not t[2]][:6]
    assert not wrong, json.dumps(wrong, indent=1)


def _passing(result) -> list[str]:
    assert result.status == "graded" and result.tests, (result.status, result.tests)
    return [t[0] for ts in result.tests.values() for t in ts if t[2]]


def test_every_single_test_fails_on_the_blank_06(attacked):
    """Each test case, public or hidden, fails on the blank student notebook (one that passes checks nothing)."""
    assert not _passing(attacked[-1]["blank.ipynb"]), "these tests pass on the blank student notebook"


def test_nothing_outside_the_output_folder_changes(attacked):
    _, before, subs, out, _ = attacked
    assert _tree_hash(subs) == before["subs"]
    assert _tree_hash(PROJECT / "metalib") == before["metalib"]
    assert _tree_hash(SOLUTIONS) == before["solutions"]
    assert sorted(p.name for p in out.iterdir()) == ["grades.csv", "report.md"]
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in subs.iterdir())
    report = (out / "report.md").read_text()
    assert not any(line.startswith("## alice") for line in report.splitlines())


def test_grading_without_sandbox_says_it_is_not_isolated(tmp_path):
    import nbformat
    (tmp_path / "subs").mkdir()
    nbformat.write(solved("00_welcome"), tmp_path / "subs" / "ok.ipynb")
    (r,) = grade_folder(tmp_path / "subs", SOLUTIONS / "00_welcome.ipynb", out=tmp_path / "out", isolate=False,
                        timeout=60, progress=False)
    assert r.scores == {"q1": 1.0}, r.tests
    assert "Not isolated" in (tmp_path / "out" / "report.md").read_text()


def test_hidden_inputs_are_drawn_per_run():
    import random
    a, b = JUDGE.probes(random.Random(1)), JUDGE.probes(random.Random(2))
    assert [p.code for p in a if not p.hidden] == [p.code for p in b if not p.hidden]
    assert all(p.code != q.code for p, q in zip(a, b) if p.hidden and "()" not in p.code)  # q2b takes no input
    assert {p.question for p in a if p.hidden} == {p.question for p in a if not p.hidden} == set(FULL)


def test_probes_follow_their_function_when_a_master_renumbers_its_questions():
    """A new question inserted before the judged ones: each probe moves to the question that now
    defines its function; the new question (unknown to the judge) keeps Otter's tests."""
    import random

    from metalib.grading.assignment import Question
    from metalib.grading.folder import _by_function

    original = Assignment.from_master(A06)
    qs = [Question("q1", 1.0, False, ("predict_size",), original.auto_questions[0].tests)]
    qs += [Question(f"new_{q.name}", q.points, q.manual, q.functions, q.tests) for q in original.auto_questions]
    renumbered = Assignment(original.name, original.master, tuple(qs))
    probes = JUDGE.probes(random.Random(0))
    moved = _by_function(probes, renumbered, JUDGE.references())
    assert len(moved) == len(probes)
    assert {p.name: p.question for p in moved} == {p.name: f"new_{p.question}" for p in probes}
    assert "q1" not in {p.question for p in moved}
    # a function renamed away from every question: its probes are dropped (that question runs its tests)
    renamed = Assignment(original.name, original.master, tuple(
        Question(q.name, q.points, q.manual, tuple("other" if f == "inner_step_jacobian" else f for f in q.functions), q.tests)
        for q in original.auto_questions))
    assert not [p for p in _by_function(probes, renamed, JUDGE.references()) if "jacobian" in p.name]


# -- the judges of notebooks 00-04 -------------------------------------------------------------------
JUDGED = ["00_welcome", "01_supervised_meta_learning", "02_black_box", "03_matching_networks",
          "04_prototypical_networks"]
# what a dishonest student patches in the kernel so that Otter's in-kernel tests pass on blank answers
# (measured: with Otter's in-kernel tests instead of 00's judge, blank answers so patched earn 0.25 of q1)
PATCH_CHECKS = """
import math, torch
import metalib.checks
math.isclose = lambda *a, **k: True
for _n in dir(metalib.checks):
    if _n.startswith("assert"):
        setattr(metalib.checks, _n, lambda *a, **k: None)
torch.allclose = torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
for _m in ("metalib.grading.judge", "metalib.grading.judges.common"):
    try:
        import importlib
        _mod = importlib.import_module(_m)
        for _n in ("compare", "tensors", "numbers", "names", "nothing"):
            if hasattr(_mod, _n):
                setattr(_mod, _n, lambda *a, **k: (lambda *a, **k: None))
    except Exception as err:
        print("cannot patch", _m, err)
"""


# answers that reach a reference the notebook itself uses (guarded, metalib/grading/guard.py) by a route
# the static check cannot see: they raise while the probes run, and are flagged
ROUTED = {
    "02_black_box": ("build_sequence", "def build_sequence(z_support, y_support, z_query, n_way, generator=None):\n"
                     "    import importlib\n    lib = importlib.import_module('metalib.blackbox')\n"
                     "    return lib.build_sequence(z_support, y_support, z_query, n_way, generator)\n"),
    "04_prototypical_networks": ("prototypes", "def prototypes(z_support, y_support, n_way):\n    import sys, importlib\n"
                                 "    importlib.import_module('metalib.protonet')\n"
                                 "    return sys.modules['metalib.protonet'].prototypes(z_support, y_support, n_way)\n"),
}


def _judge(name: str):
    from metalib.grading.judge import judge_for
    return judge_for(name)


@pytest.mark.parametrize("name", JUDGED)
def test_each_question_has_public_and_hidden_probes_drawn_per_run(name):
    import random
    judge = _judge(name)
    a, b = judge.probes(random.Random(1)), judge.probes(random.Random(2))
    questions = {q.name for q in Assignment.from_master(SOLUTIONS / f"{name}.ipynb").auto_questions}
    assert {p.question for p in a if p.hidden} == {p.question for p in a if not p.hidden} == questions
    assert [p.code for p in a if not p.hidden] == [p.code for p in b if not p.hidden]
    takes_input = [(p, q) for p, q in zip(a, b) if p.hidden and "()" not in p.code.splitlines()[-1]]
    assert takes_input and all(p.code != q.code for p, q in takes_input), \
        [p.name for p, q in takes_input if p.code == q.code]
    for module, names in judge.unavailable.items():  # the hidden references exist and can be stubbed
        import importlib
        stub_source(inspect.getsource(importlib.import_module(module)), names, module)


def _last_answer(nb, functions) -> int:
    from grading_corpus import answer_index
    return max(answer_index(nb, f) for f in functions)


@pytest.fixture(scope="module")
def judged_graded(tmp_path_factory):
    """Per notebook 00-04: the honest solution, and blank answers with the checks (and the judge's
    comparison, as the kernel sees it) patched, graded by the real sandboxed grader."""
    import nbformat

    from metalib.assignments import NOTEBOOKS
    out = {}
    for name in JUDGED:
        subs = tmp_path_factory.mktemp(name[:2])
        assignment = Assignment.from_master(SOLUTIONS / f"{name}.ipynb")
        nbformat.write(solved(name), subs / "honest.ipynb")
        if name != "00_welcome":  # 00's blank is graded with the broken corpus (tests/test_grading.py)
            nbformat.write(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), subs / "blank.ipynb")
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nb.cells[_last_answer(nb, assignment.functions)].source += "\n\n" + PATCH_CHECKS
        if name in ROUTED:
            from grading_corpus import answer_index
            fn, src = ROUTED[name]
            nb.cells[answer_index(nb, fn)].source = src
        nbformat.write(nb, subs / "patched_checks.ipynb")
        results = grade_folder(subs, assignment, timeout=120, jobs=2, progress=False)
        out[name] = (assignment, {r.file: r for r in results})
    return out


@pytest.mark.parametrize("name", JUDGED[1:])
def test_every_single_test_fails_on_the_blank_notebook(judged_graded, name):
    """Each test case, public or hidden, fails on the blank student notebook (one that passes checks nothing)."""
    assert not _passing(judged_graded[name][1]["blank.ipynb"]), "these tests pass on the blank student notebook"


@pytest.mark.parametrize("name", JUDGED)
def test_honest_full_marks_and_patched_checks_nothing(judged_graded, name):
    assignment, results = judged_graded[name]
    honest, patched = results["honest.ipynb"], results["patched_checks.ipynb"]
    failed = {q: [t for t in ts if not t[2]] for q, ts in honest.tests.items()}
    assert honest.scores == {q.name: q.points for q in assignment.auto_questions}, (honest.status, failed)
    assert not honest.flags and not honest.similar, (honest.flags, honest.similar)
    assert all(t[0] in {p.name for p in _judge(name).probes(__import__("random").Random(0))}
               for ts in honest.tests.values() for t in ts), "every question is judged outside the sandbox"
    assert patched.status == "graded" and set(patched.scores.values()) == {0.0}, (patched.scores, patched.tests)
    routed = {q.name for q in assignment.auto_questions if name in ROUTED and ROUTED[name][0] in q.functions}
    assert set(patched.flags) == routed and all("(not available while grading)" in " ".join(patched.flags[q])
                                                for q in routed), patched.flags
