"""metalib.grading: behaviour that `make mutants MODULES=grading/...` showed untested by the fast, in-process
grading tests (tests/test_grading.py runs notebooks in sandboxed kernels and takes minutes, far too long
to run per mutant): report rendering and escaping, tolerant notebook reading, the guard and stub rewrites,
the judge's comparisons, master parsing, reference detection, the sandbox command, the folder's scoring
and result reading, Gradescope's results and CLI, the runner's notebook assembly, and of judges/ the shared
checks (common.py) and notebook 00's judge (welcome.py): its draws, messages and tolerances.

Every check is against a value written out by hand (an expected report line, a CSV row, a bwrap argument
list) or a fake that records what the grader does; nothing starts a kernel or a sandbox.
"""
from __future__ import annotations

import csv
import math
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

from metalib.grading import guard, pyast, report, submission
from metalib.grading import assignment as asg
from metalib.grading.assignment import Assignment, Question, defined_functions
from metalib.grading.folder import StudentResult
from metalib.grading.judge import NOT_AVAILABLE, Judge, Probe, compare, expected_value, judge_for, load_output, stub_source
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails_check  # noqa: E402


# ============================================================================ report.py

def test_md_collapses_whitespace_caps_then_escapes_every_markup_character():
    assert report.md("a  b\n\n\tc ") == "a b c"
    for ch in "\\`*_{}[]()#+-.!|<>~":
        assert report.md(f"x{ch}y") == f"x\\{ch}y", ch
    assert report.md("plain, text; 'quoted' = @ $ % & ^ ? / :") == "plain, text; 'quoted' = @ $ % & ^ ? / :"
    assert report.md("x" * 600) == "x" * 500
    assert report.md("ab.cd", cap=3) == "ab\\."  # the cap counts characters before escaping
    assert report.md(12.5) == "12\\.5"


def test_code_is_one_backtick_free_line_capped_at_120():
    assert report.code("a`b  \n c") == "`a'b c`"
    assert report.code("y" * 200) == "`" + "y" * 120 + "`"
    assert report.code("abcdef", cap=4) == "`abcd`"
    assert report.code(3) == "`3`"


def test_cell_neutralises_formulas_only():
    for lead in "=+-@":
        assert report.cell(f"{lead}SUM(A1)") == f"'{lead}SUM(A1)"
    assert report.cell("  =x\n y") == "'=x y"  # whitespace collapsed first, so a leading blank hides nothing
    assert report.cell("a=b") == "a=b" and report.cell("'x") == "'x" and report.cell("") == ""
    assert report.cell(-3) == "'-3"


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.md"
    path.write_text("old")
    report._atomic_write(path, "new é\r\nline")
    assert path.read_bytes() == "new é\r\nline".encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md"]


def _assignment():
    return Assignment("hw", Path("hw.ipynb"), (
        Question("q1", 2.0, False, ("f",), ()),
        Question("q2", 1.5, False, ("g",), ()),
        Question("q3", 3.0, True, (), ())))


def _results():
    alice = StudentResult("alice", "alice.ipynb", "graded", {"q1": 2.0, "q2": 0.375},
                          {"q1": [["t1", False, True, ""], ["t2", True, True, ""]],
                           "q2": [["u1", False, False, "wrong *value*"], ["u2", True, True, ""],
                                  ["u3", True, False, "y" * 600]]}, {}, [])
    bob = StudentResult("bob_b", "=bob.ipynb", "no code", {},
                        {"q1": [["t1", False, False, "no code"], ["t2", True, False, "no code"]]},
                        {"q2": ["metalib.x", "metalib.y"]}, [f"code cell {i}: e{i}" for i in range(1, 7)],
                        {"q1": ["f ~ metalib.m.f (0.95)"]})
    return [alice, bob]


def test_grades_csv_rows_by_hand(tmp_path):
    csv_path, _ = report.write_reports(_results(), _assignment(), tmp_path / "out")
    assert csv_path == tmp_path / "out" / "grades.csv"
    rows = list(csv.reader(io.StringIO(csv_path.read_text(), newline="")))
    assert rows == [
        ["student", "file", "status", "q1 (2)", "q2 (1.5)", "total", "max", "flags"],
        ["alice", "alice.ipynb", "graded", "2.0", "0.375", "2.375", "3.5", ""],
        ["bob_b", "'=bob.ipynb", "no code", "0.0", "0.0", "0", "3.5",
         "q2: uses metalib.x, metalib.y; q1: close to the library's source: f ~ metalib.m.f (0.95)"]]
    assert csv_path.read_bytes().count(b"\r\n") == 3  # csv's own line ends, written untranslated


def test_report_md_by_hand(tmp_path):
    _, md_path = report.write_reports(_results(), _assignment(), tmp_path, isolated=False, seed=7)
    assert md_path == tmp_path / "report.md"
    assert md_path.read_text().split("\n") == [
        "# Grades: hw", "", "2 submissions, 3.5 auto-graded points.",
        "Hidden tests are marked (hidden); students only saw the public ones. Hidden tests carry 75% of "
        "each question's points.", "",
        "Hidden inputs were drawn for this run with seed 7 (`--seed 7` repeats them).", "",
        "**Not isolated**: this run used `--no-sandbox`; submissions could read other files and tamper with the "
        "grading (see docs/GRADING.md).", "",
        "Manually graded questions (not scored here): q3.", "",
        "## alice: 2.375 / 3.5", "",
        "File `alice.ipynb`, status: graded.",
        "* **q1**: 2 / 2 (2/2 tests passed)",
        "* **q2**: 0.375 / 1.5 (1/3 tests passed)",
        "  * public `u1`: wrong \\*value\\*",
        "  * hidden `u3`: " + "y" * 500,
        "",
        "## bob\\_b: 0 / 3.5", "",
        "File `=bob.ipynb`, status: no code.",
        *[f"* error in the submission: code cell {i}: e{i}" for i in range(1, 6)],
        "* **q1**: 0 / 2 (0/2 tests passed)",
        "  * FLAGGED for review: close to the library's source: f \\~ metalib\\.m\\.f \\(0\\.95\\)",
        "* **q2**: 0 / 1.5 (0/0 tests passed)",
        "  * FLAGGED for review: uses metalib's metalib\\.x, metalib\\.y instead of solving; scored 0",
        ""]


def test_report_md_defaults_isolated_without_seed_or_manual_questions(tmp_path):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("f",), ()),))
    long = StudentResult("s" * 130, "f.ipynb", "z" * 450, {"q1": 1.0}, {"q1": [["t", False, True, ""]]}, {},
                         ["e" * 450])
    _, md_path = report.write_reports([long], a, tmp_path)
    lines = md_path.read_text().split("\n")
    assert lines[:5] == ["# Grades: hw", "", "1 submissions, 1 auto-graded points.",
                         "Hidden tests are marked (hidden); students only saw the public ones. Hidden tests carry "
                         "75% of each question's points.", ""]
    assert lines[5:] == ["## " + "s" * 120 + ": 1 / 1", "", "File `f.ipynb`, status: " + "z" * 400 + ".",
                         "* error in the submission: " + "e" * 400, "* **q1**: 1 / 1 (1/1 tests passed)", ""]


# ============================================================================ submission.py

def _write(tmp_path, obj, name="nb.ipynb", raw=None):
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else json.dumps(obj).encode())
    return path


def test_code_cells_reads_careless_notebooks(tmp_path):
    cells = [{"cell_type": "code", "source": ["a = 1\n", 7, "b = 2"]}, {"cell_type": "markdown", "source": "x"},
             "not a cell", {"cell_type": "code", "source": "c = 3"}, {"cell_type": "code"},
             {"cell_type": "code", "source": 5}, {"source": "no type"}]
    assert submission.code_cells(_write(tmp_path, {"cells": cells})) == ["a = 1\nb = 2", "c = 3", ""]
    v3 = {"worksheets": [{"cells": [{"cell_type": "code", "input": "old = 1"}]}, "junk",
                         {"cells": [{"cell_type": "code", "input": ["x", "y"]}]}]}
    assert submission.code_cells(_write(tmp_path, v3)) == ["old = 1", "xy"]
    bom = b"\xef\xbb\xbf" + json.dumps({"cells": [{"cell_type": "code", "source": "\u00e9 = 1"}]}).encode()
    assert submission.code_cells(_write(tmp_path, None, raw=bom)) == ["\u00e9 = 1"]
    latin = b'{"cells": [{"cell_type": "markdown", "source": "caf\xe9"}, {"cell_type": "code", "source": "k = 2"}]}'
    assert submission.code_cells(_write(tmp_path, None, raw=latin)) == ["k = 2"]


def test_code_cells_says_why_a_file_is_not_a_notebook(tmp_path, monkeypatch):
    with pytest.raises(submission.NotANotebook, match=r"^not JSON: Expecting value: line 1 column 1"):
        submission.code_cells(_write(tmp_path, None, raw=b"hello"))
    for obj in ([1, 2], {"cells": "x"}, {"worksheets": "x"}, {}):
        with pytest.raises(submission.NotANotebook, match=r"^no list of cells$"):
            submission.code_cells(_write(tmp_path, obj))
    monkeypatch.setattr(submission, "MAX_BYTES", 2**20)
    fits = b'{"cells": []}'.ljust(2**20)
    assert submission.code_cells(_write(tmp_path, None, raw=fits)) == []  # exactly the limit: read
    with pytest.raises(submission.NotANotebook, match=r"^larger than 1 MiB$"):
        submission.code_cells(_write(tmp_path, None, raw=fits + b" "))


def test_code_cells_default_limit_is_50_mib():
    assert submission.MAX_BYTES == 50 * 2**20


def test_without_grader_calls_removes_otters_statements_only():
    cells = ["import otter\ngrader = otter.Notebook('hw.ipynb')",
             "x = 1\ngrader.check('q1')  # check it",
             "  grader.check_all()\n\n# a comment",
             "y = grader.check('q1')\n# grader.check('q2')\nprint('grader.check(')",
             "grader.export(pdf=False)\ngrader.run_plugin('x')\ngrader.to_pdf()\nz = 2",
             "# only a comment",
             "import  otter  \ngrader  =  otter.Notebook()\ngrader.other('q')"]
    assert submission.without_grader_calls(cells) == [
        "x = 1",
        "y = grader.check('q1')\n# grader.check('q2')\nprint('grader.check(')",
        "z = 2",
        "# only a comment",
        "grader.other('q')"]


def test_through_last_answer_stops_after_the_last_answer_cell():
    cells = ["a = 1", "def f():\n    pass", "b = 2", "async def g():\n    pass", "c = 3"]
    assert submission.through_last_answer(cells, {"f", "g"}) == cells[:4]
    assert submission.through_last_answer(cells, {"f"}) == cells[:2]
    assert submission.through_last_answer(cells, {"h"}) == cells
    assert submission.through_last_answer([], {"f"}) == []


# ============================================================================ guard.py and judge.stub_source

def test_check_raises_only_once_the_checks_begin(monkeypatch):
    monkeypatch.setitem(guard._state, "checking", False)
    guard.check("m.f")  # the notebook's own run: fine
    guard.begin_checks()
    assert guard._state["checking"] is True
    with pytest.raises(NotImplementedError, match=r"^m\.f is not available while grading: write your own "
                                                  r"implementation$"):
        guard.check("m.f")


SRC = '''import x


def f(a):
    """Doc
    string."""
    if a:
        return 1
    return 2


class C:
    def g(self):
        return 3


def g():
    return 4


async def h():
    await x
'''


def test_guard_source_inserts_one_line_after_each_docstring():
    out = guard.guard_source(SRC, ("f", "g", "h"), "pkg.mod")
    call = '__import__("metalib.grading.guard", fromlist=["check"]).check({!r})'
    want = SRC.replace('    string."""\n', '    string."""\n    ' + call.format("pkg.mod.f") + "\n") \
        .replace("def g():\n", "def g():\n    " + call.format("pkg.mod.g") + "\n") \
        .replace("async def h():\n", "async def h():\n    " + call.format("pkg.mod.h") + "\n")
    assert out == want
    only_doc = guard.guard_source('def f():\n  """Doc."""\n', ("f",), "m")
    assert only_doc == 'def f():\n  """Doc."""\n  ' + call.format("m.f") + "\n"
    not_a_doc = guard.guard_source("def f():\n  7\n  return 1\n", ("f",), "m")
    assert not_a_doc == "def f():\n  " + call.format("m.f") + "\n  7\n  return 1\n"


def test_stub_source_replaces_whole_bodies_docstring_included():
    out = stub_source(SRC, ("f", "h"), "pkg.mod")
    want = SRC.replace('    """Doc\n    string."""\n    if a:\n        return 1\n    return 2\n',
                       "    raise NotImplementedError('pkg.mod.f " + NOT_AVAILABLE + "')\n") \
        .replace("async def h():\n    await x\n", "async def h():\n    raise NotImplementedError('pkg.mod.h "
                 + NOT_AVAILABLE + "')\n")
    assert out == want


def test_rewrites_refuse_one_liners_and_missing_or_nested_functions():
    with pytest.raises(ValueError, match=re.escape("pkg.mod.f: a one-line function cannot be hidden; give it a body")):
        stub_source("def f(): return 1\n", ("f",), "pkg.mod")
    with pytest.raises(ValueError, match=re.escape("pkg.mod.f: a one-line function cannot be guarded; give it a body")):
        guard.guard_source("def g():\n    return 2\ndef f(): return 1\n", ("f", "g"), "pkg.mod")
    with pytest.raises(ValueError, match=re.escape("pkg.mod defines no top-level function(s) ['a', 'b'] to be "
                                                   "hidden while grading")):
        stub_source(SRC, ("f", "b", "a"), "pkg.mod")
    with pytest.raises(ValueError, match=re.escape("m defines no top-level function(s) ['C'] to be guarded")):
        guard.guard_source(SRC, ("C",), "m")  # a class is not a function


def test_rewrite_functions_edits_the_last_function_first():
    order = []

    def edit(node, lines):
        order.append(node.name)
        lines[node.lineno - 1] = lines[node.lineno - 1].replace("def ", "def new_")

    out = guard.rewrite_functions(SRC, ("h", "f", "g"), "m", "seen", edit)
    assert order == ["h", "g", "f"]
    assert out == SRC.replace("def f(", "def new_f(").replace("def g():", "def new_g():") \
        .replace("def h(", "def new_h(")


def test_pyast_parse_is_ast_parse_with_its_arguments():
    import ast
    tree = pyast.parse("1 + 2", "<cell>", "eval")
    assert isinstance(tree, ast.Expression)
    with pytest.raises(SyntaxError) as err:
        pyast.parse("def (", "my_file.py")
    assert err.value.filename == "my_file.py"
    assert isinstance(pyast.parse("x = 1"), ast.Module)


# ============================================================================ judge.py

def test_judge_probes_must_have_unique_names():
    import random

    def make(rng):
        return [Probe("q1", "a", False, "result = 1"), Probe("q1", f"b{rng.randrange(2)}", True, "result = 2")]

    judge = Judge("hw", make, dict)
    assert [p.name for p in judge.probes(random.Random(0))][0] == "a"
    dup = Judge("hw", lambda rng: [Probe("q1", "a", False, ""), Probe("q2", "a", True, "")], dict)
    with pytest.raises(ValueError, match=re.escape("hw: probe names must be unique: ['a', 'a']")):
        dup.probes(random.Random(0))
    assert dup.unavailable == {} and dup.guarded == {}
    p = Probe("q", "n", False, "c")
    assert p.check is None and p.atol == 1e-10 and p.rtol == 1e-8


def test_judge_for_imports_the_listed_judge_only():
    import metalib.grading.judges.welcome as welcome
    assert judge_for("00_welcome") is welcome.JUDGE
    assert judge_for("99_unknown") is None


def test_expected_value_runs_the_probe_with_torch_and_the_references():
    probe = Probe("q1", "p", False, "result = torch.tensor([1.0, 2.0]) * f(2)")
    torch.testing.assert_close(expected_value(probe, {"f": lambda x: x + 1}), torch.tensor([3.0, 6.0]))
    with pytest.raises(NameError):
        expected_value(probe, {})
    bad = Probe("q1", "named", False, "result = 1 / 0")
    with pytest.raises(ZeroDivisionError) as err:
        expected_value(bad, {})
    tb = err.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_filename == "<reference named>"


def test_load_output_takes_plain_data_only(tmp_path, monkeypatch):
    import metalib.grading.judge as judge_mod
    torch.save({"a": torch.arange(3.0), "b": [1, 2.5]}, tmp_path / "ok.pt")
    got = load_output(tmp_path / "ok.pt")
    assert torch.equal(got["a"], torch.arange(3.0)) and got["b"] == [1, 2.5]
    torch.save(Probe("q", "n", False, "c"), tmp_path / "code.pt")
    with pytest.raises(ValueError, match=r"^the answer returned something that is not plain data \(a tensor, a number, "
                                         r"or lists/dicts of them\): UnpicklingError: "):
        load_output(tmp_path / "code.pt")
    assert judge_mod.MAX_OUTPUT_BYTES == 64 * 2**20
    size = (tmp_path / "ok.pt").stat().st_size
    monkeypatch.setattr(judge_mod, "MAX_OUTPUT_BYTES", size)
    load_output(tmp_path / "ok.pt")  # exactly the limit: read
    monkeypatch.setattr(judge_mod, "MAX_OUTPUT_BYTES", size - 1)
    with pytest.raises(ValueError, match=r"^the output is larger than 0 MiB$"):
        load_output(tmp_path / "ok.pt")


def test_load_output_error_message_is_capped(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"x" * 100)
    with pytest.raises(ValueError) as err:
        load_output(tmp_path / "junk.pt")
    head = "the answer returned something that is not plain data (a tensor, a number, or lists/dicts of them): "
    text = str(err.value)
    assert text.startswith(head) and ": " in text[len(head):]
    name, detail = text[len(head):].split(": ", 1)
    assert name.isidentifier() and 0 < len(detail) <= 200


def _fails(got, expected, message, **kw):
    with pytest.raises(AssertionError) as err:
        compare(got, expected, **kw)
    assert str(err.value) == message, str(err.value)


def test_compare_tensors():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    compare(x.float(), x)                        # compared in the expected dtype
    compare(x + 5e-11, x)                        # atol 1e-10
    with pytest.raises(AssertionError, match=r"^result\b"):
        compare(x + 1e-6, x)                     # the default tolerances are tight
    compare(x + 1e-6, x, atol=1e-5)
    compare(x * (1 + 1e-7), x, atol=0, rtol=1e-6)
    _fails([1.0, 2.0], x, "r: expected a tensor, got list", name="r")
    _fails(x.as_subclass(type("Sub", (torch.Tensor,), {})), x, "r: expected a tensor, got Sub", name="r")
    _fails(torch.tensor([1 + 0j, 2]), x, "r: expected a real floating-point tensor, got torch.complex64", name="r")
    _fails(torch.tensor([True, False]), x, "r: expected a real floating-point tensor, got torch.bool", name="r")
    _fails(x[:1], x, "r has shape (1,), expected (2,)", name="r")
    compare(torch.tensor([1, 2]), x)             # integer tensors are compared as values


def test_compare_bool_none_and_numbers():
    compare(True, True)
    compare(None, None)
    _fails(1, True, "result: expected True, got 1")
    _fails(False, None, "r: expected None, got False", name="r")
    _fails("x" * 400, None, ("r: expected None, got '" + "x" * 400)[:300], name="r")
    compare(3, 3.0)
    compare(2.5, 2.5)
    _fails(True, 1, "result: expected 1, got True")          # a bool is not a number here
    _fails(torch.tensor(1.0), 1.0, "result: expected 1.0, got tensor(1.)")
    _fails(float("nan"), 1.0, "result: expected 1.0, got nan")
    _fails(float("inf"), float("inf"), "result: expected inf, got inf")
    compare(1e-11, 0.0)                          # abs_tol = atol = 1e-10
    _fails(1e-9, 0.0, "result: expected 0.0, got 1e-09")
    compare(1e-9, 0.0, atol=1e-8)
    compare(1.0 + 1e-13, 1.0, atol=0, rtol=0)    # rel_tol never below 1e-12
    _fails(1.0 + 1e-11, 1.0, "result: expected 1.0, got 1.00000000001", atol=0, rtol=0)
    compare(1.0 + 1e-9, 1.0, atol=0)             # rtol 1e-8
    compare(1.05, 1.0, atol=0, rtol=0.1)
    _fails(1.05, 1.0, "result: expected 1.0, got 1.05", atol=0, rtol=0.01)


def test_compare_sequences_and_dicts_name_the_failing_entry():
    compare((1, [2.0, None]), [1, (2.0, None)])
    _fails([1], [1, 2], "r: expected a sequence of 2, got list", name="r")
    _fails({"a": 1}, [1], "r: expected a sequence of 1, got dict", name="r")
    _fails([1, [2.0, 3]], [1, [2.0, 4]], "r[1][1]: expected 4, got 3", name="r")
    compare({"a": 1, "b": [True]}, {"b": [True], "a": 1.0})
    _fails({"a": 1}, {"a": 1, "b": 2}, "r: expected keys ['a', 'b']", name="r")
    _fails([("a", 1)], {"a": 1}, "result: expected keys ['a']")
    _fails({"a": {"b": 1}}, {"a": {"b": 2}}, "r['a']['b']: expected 2, got 1", name="r")
    compare([torch.tensor([1.0 + 1e-6])], [torch.tensor([1.0])], atol=1e-5, rtol=0)   # tolerances reach nested entries
    compare({"k": 1.0 + 1e-6}, {"k": 1.0}, atol=1e-5, rtol=0)
    _fails([1.0 + 1e-6], [1.0], "result[0]: expected 1.0, got 1.000001", atol=1e-7, rtol=0)
    compare([1.0 + 1e-6], [1.0], atol=0, rtol=1e-5)
    compare({"k": 1.0 + 1e-6}, {"k": 1.0}, atol=0, rtol=1e-5)
    with pytest.raises(TypeError, match=re.escape("r: cannot compare expected values of type str")):
        compare("a", "a", name="r")


# ============================================================================ assignment.py

def _master(tmp_path, cells, name="hw.ipynb"):
    nb = nbformat.v4.new_notebook()
    make = {"raw": nbformat.v4.new_raw_cell, "code": nbformat.v4.new_code_cell, "md": nbformat.v4.new_markdown_cell}
    nb.cells = [make[kind](src) for kind, src in cells]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_from_master_reads_questions_answers_and_tests(tmp_path):
    hidden_cfg = '""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\ndef test_hid():\n    assert f() == 1\n'
    path = _master(tmp_path, [
        ("code", "def outside():\n    pass"),
        ("raw", "# BEGIN QUESTION\nname: q1\npoints: 3"),
        ("md", "Write f."),
        ("raw", "# begin solution"),
        ("code", "def f():\n    return 1\ndef helper():\n    pass"),
        ("raw", " # END SOLUTION "),
        ("code", "def not_an_answer():\n    pass"),
        ("raw", "# BEGIN TESTS"),
        ("code", "def test_pub():\n    assert f() == 1\ntest_pub()"),
        ("code", hidden_cfg),
        ("code", "assert f() == 1"),
        ("raw", "# END TESTS"),
        ("code", "def after_tests():\n    pass"),
        ("raw", "# END QUESTION"),
        ("raw", "# BEGIN QUESTION\nname: 2\nmanual: true"),
        ("raw", "# END QUESTION"),
        ("raw", "# END QUESTION"),
        ("raw", "# BEGIN SOLUTION"),
        ("code", "def orphan():\n    pass"),
    ])
    a = Assignment.from_master(path)
    assert a.name == "hw" and a.master == path
    q1, q2 = a.questions
    assert (q1.name, q1.points, q1.manual, q1.functions) == ("q1", 3.0, False, ("f", "helper"))
    assert q1.tests == (asg.TestCode("test_pub", "def test_pub():\n    assert f() == 1\ntest_pub()", False),
                        asg.TestCode("test_hid", "def test_hid():\n    assert f() == 1\n", True),
                        asg.TestCode("test_2", "assert f() == 1", False))
    assert (q2.name, q2.points, q2.manual, q2.functions, q2.tests) == ("2", 1.0, True, (), ())
    assert a.auto_questions == (q1,) and a.functions == {"f", "helper"}


def test_from_master_names_the_cell_of_a_malformed_question(tmp_path):
    for cfg in ("# BEGIN QUESTION", "# BEGIN QUESTION\npoints: 2", "# BEGIN QUESTION\n- q1"):
        path = _master(tmp_path, [("md", "intro"), ("raw", cfg)], name="bad.ipynb")
        with pytest.raises(ValueError, match=r"^bad\.ipynb cell 1: BEGIN QUESTION needs a 'name:' line$"):
            Assignment.from_master(path)


def test_test_config_and_defined_functions():
    src = '  """ # BEGIN TEST CONFIG\nhidden: true\npoints: 2\n"""   # END TEST CONFIG\nbody\n'
    assert asg.test_config(src) == ({"hidden": True, "points": 2}, "body\n")
    assert asg.test_config('""" # BEGIN TEST CONFIG\n""" # END TEST CONFIG') == ({}, "")
    assert asg.test_config("x = 1\n") == ({}, "x = 1\n")
    assert asg.test_config('x\n""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n')[0] == {}
    assert defined_functions("def a():\n    def inner():\n        pass\nasync def b():\n    pass\nclass C:\n"
                             "    def m(self):\n        pass\nx = 1") == ["a", "b"]
    assert defined_functions("def a(x):\n    return (\ndef b (y):\n  pass\n  def c(z):") == ["a", "b"]


# ============================================================================ references.py

from metalib.grading import references as refs  # noqa: E402


def test_python_turns_ipython_syntax_into_python_and_keeps_what_it_cannot():
    assert refs._python("%time x = 1\nimport metalib as ml") == \
        "get_ipython().run_line_magic('time', 'x = 1')\nimport metalib as ml\n"
    assert refs._python(None) is None  # the transformer fails: the source comes back as it was


def test_metalib_aliases_every_binding_but_checks():
    cells = ["import metalib\nimport os, metalib.maml as mm\nimport metalib.protonet",
             "from metalib import maml_gradient as mg, checks, tasks\nfrom metalib.maml_gradient import hvp as h, g",
             "from metalibx import nope\nimport metalibx\nfrom . import rel\nfrom os import path",
             "def f():\n    from metalib.checks import assert_close\n    import metalib.rl.rl2 as r2",
             "%matplotlib inline\nfrom metalib.nets import Conv4",
             "this is ( not python"]
    assert refs.metalib_aliases(cells) == {"metalib", "mm", "mg", "tasks", "h", "g", "assert_close", "r2", "Conv4"}
    assert refs.metalib_aliases([]) == set()


def test_function_uses_the_last_definition_and_its_dotted_names():
    cells = ["def f(x):\n    return old.thing(x)", "def f(x):\n    y = a.b.c(x)\n    return g(y)[0].attr + x",
             "def other():\n    return z"]
    assert refs.function_uses(cells, "f") == {"a.b.c", "a.b", "a", "g", "x", "y"}
    assert refs.function_uses(cells, "missing") is None
    assert refs.function_uses(["class C:\n    def f(self):\n        return q"], "f") is None  # top level only
    assert refs.function_uses(["async def f():\n    return w.v"], "f") == {"w.v", "w"}


def test_reference_uses_flags_what_the_stub_does_not_use():
    stub = ["import metalib.maml_gradient as mg\nfrom metalib import checks",
            "def answer(x):\n    t = mg.inner_trajectory(x)\n    checks.assert_shape(t, (2,))\n    raise NotImplementedError"]
    honest = ["def answer(x):\n    t = mg.inner_trajectory(x)\n    return t * 2"]
    assert refs.reference_uses(stub + honest, stub, "answer") == []
    cheat = ["from metalib.maml_gradient import g_maml as gm",
             "def answer(x):\n    a = mg.g_maml_hvp.__wrapped__(x)\n    b = gm(x)\n    c = mg.checks.x\n"
             "    d = metalib.tasks.T\n    e = mg.inner_trajectory(x)\n    return a + b + c + d + e + mg.other"]
    assert refs.reference_uses(cheat, stub, "answer") == ["gm", "mg.g_maml_hvp.__wrapped__", "mg.other"]
    assert refs.reference_uses(["import metalib\n" + cheat[1]], [], "answer") == ["metalib.tasks.T"]
    assert refs.reference_uses(cheat, stub, "never_defined") == []
    assert refs.reference_uses(cheat, [], "answer") == ["gm"]  # mg bound nowhere: not a metalib name


def test_shape_abstracts_names_constants_docstrings_and_decorators():
    a = refs._functions(['@decorator\ndef f(x: int, y=1) -> int:\n    """Doc."""\n    return x.real + y * 2'])["f"]
    b = refs._functions(["def g(p, q=7):\n    return p.real + q * 3"])["g"]
    c = refs._functions(["def g(p, q=7):\n    return p.imag + q * 3"])["g"]
    assert refs._shape(a) == refs._shape(b) != refs._shape(c)   # attribute names are kept
    assert refs._shape(a)[:3] == ["FunctionDef", "arguments", "Return"]
    doc_only = refs._functions(['def f():\n    """Only a docstring."""'])["f"]
    assert refs._shape(doc_only) == ["FunctionDef", "arguments", "Pass"]
    assert "Constant" in refs._shape(refs._functions(["def f():\n    x = 'doc'\n    return x"])["f"])
    found = refs._functions(["def f():\n    pass", "x y z", "class C:\n    def m(self):\n        pass",
                             "async def a():\n    pass", "def f(x):\n    return x"])
    assert set(found) == {"f"} and len(found["f"].args.args) == 1  # the last one wins


def _copy_of(module, name: str, new_name: str) -> str:
    import importlib
    import inspect
    src = inspect.getsource(getattr(importlib.import_module(module), name))
    return src.replace(f"def {name}(", f"def {new_name}(", 1)


class _FakeJudge:
    def __init__(self, unavailable):
        self.unavailable = unavailable


def test_similar_to_library_flags_pasted_sources_from_the_hidden_modules():
    # the library modules here are outside metalib/grading/, so that a mutated copy of the grader sees them unchanged
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("ea", "other"), ()),
                                            Question("q2", 1.0, False, ("mc",), ()),
                                            Question("q3", 1.0, True, ("hidden_manual",), ())))
    pasted = [_copy_of("metalib.evaluate", "evaluate_accuracy", "ea"),
              _copy_of("metalib.evaluate", "mean_ci95", "mc"),
              _copy_of("metalib.evaluate", "evaluate_accuracy", "hidden_manual"),
              "def other(x):\n    return x"]
    judge = _FakeJudge({"metalib.tasks": ("EpisodeSampler",), "metalib.evaluate": ("mean_ci95",)})
    assert refs.similar_to_library(pasted, a, judge) == {
        "q1": ["ea ~ metalib.evaluate.evaluate_accuracy (1.00)"],
        "q2": ["mc ~ metalib.evaluate.mean_ci95 (1.00)"]}
    assert refs.similar_to_library(pasted, a, None) == {}
    assert refs.similar_to_library(pasted, a, _FakeJudge({})) == {}
    assert refs.similar_to_library(["def ea(p):\n    return [str(p)]"], a, judge) == {}


def test_similarity_thresholds_are_inclusive(monkeypatch):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("mc",), ()),))
    pasted = [_copy_of("metalib.evaluate", "mean_ci95", "mc")]
    judge = _FakeJudge({"metalib.evaluate": ()})
    n = len(refs._shape(refs._functions(pasted)["mc"]))
    monkeypatch.setattr(refs, "SIMILARITY", 1.0)
    monkeypatch.setattr(refs, "MIN_NODES", n)
    assert refs.similar_to_library(pasted, a, judge) == {"q1": ["mc ~ metalib.evaluate.mean_ci95 (1.00)"]}
    monkeypatch.setattr(refs, "MIN_NODES", n + 1)
    assert refs.similar_to_library(pasted, a, judge) == {}


def test_similarity_defaults():
    assert refs.SIMILARITY == 0.9 and refs.MIN_NODES == 25 and refs.ALLOWED == {"checks"}


def test_similarity_flags_a_close_but_not_identical_copy():
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("mc",), ()),))
    src = _copy_of("metalib.evaluate", "mean_ci95", "mc")
    close = src.replace('return v.item(), float("nan")', "return v.item(), 0.0")
    assert close != src
    (flag,) = refs.similar_to_library([close], a, _FakeJudge({"metalib.evaluate": ()}))["q1"]
    ratio = float(flag.rsplit("(", 1)[1].rstrip(")"))
    assert flag.startswith("mc ~ metalib.evaluate.mean_ci95 (") and 0.9 <= ratio < 1.0


# ============================================================================ sandbox.py

import os  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

from metalib.grading import sandbox  # noqa: E402


def _fake_bwrap(tmp_path, rc: int, stderr: str = "") -> Path:
    script = tmp_path / "fake-bwrap"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\necho "{stderr}" >&2\nexit {rc}\n')
    script.chmod(0o755)
    return script


def test_check_available_runs_a_trial_sandbox(tmp_path, monkeypatch):
    script = _fake_bwrap(tmp_path, 0)
    monkeypatch.setattr(sandbox, "BWRAP", str(script))
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    assert sandbox.check_available() == str(script)
    assert (tmp_path / "argv").read_text().split("\n")[:-1] == [
        "--ro-bind", "/", "/", "--unshare-all", "--dev", "/dev", "--proc", "/proc", "true"]


def test_check_available_says_why_not(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", str(_fake_bwrap(tmp_path, 1, "  no user namespaces  ")))
    with pytest.raises(sandbox.SandboxUnavailable, match=re.escape(
            "bwrap is installed but cannot create a sandbox here (no user namespaces): user namespaces may be "
            "disabled (sysctl kernel.unprivileged_userns_clone=1). Grade with --no-sandbox only if you accept "
            "that submissions then run NOT isolated; see docs/GRADING.md.")):
        sandbox.check_available()
    monkeypatch.setattr(sandbox, "BWRAP", str(_fake_bwrap(tmp_path, 1, "e" * 400)))
    with pytest.raises(sandbox.SandboxUnavailable, match=r"here \(e{300}\): user"):
        sandbox.check_available()
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed-anywhere")
    with pytest.raises(sandbox.SandboxUnavailable, match=re.escape(
            "bubblewrap (bwrap) is not installed, so submissions cannot be sandboxed. On Debian/Ubuntu: "
            "`sudo apt-get install bubblewrap`. Elsewhere (macOS, Windows) grade with --no-sandbox: the "
            "submissions then run NOT isolated (they can read the masters and each other, and tamper with "
            "the grading); see docs/GRADING.md.")):
        sandbox.check_available()


def test_namespaces_as_root_and_as_a_user(monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    assert sandbox._namespaces() == ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                                     "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                                     "--cap-add", "CAP_SETGID"]
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1)
    assert sandbox._namespaces() == ["--unshare-all"]


def test_readable_roots_are_python_packages_and_data_without_nested_roots(tmp_path, monkeypatch):
    t = tmp_path.resolve()
    for d in ("py/bin", "py/base", "py/ckpt", "lib/site-packages", "dist-packages/x", "other", "data", "venv/bin"):
        (t / d).mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(t / "py"))
    monkeypatch.setattr(sys, "base_prefix", str(t / "py" / "base"))
    monkeypatch.setattr(sys, "executable", str(t / "venv" / "bin" / "python"))
    monkeypatch.setattr(sys, "path", ["", str(t / "lib" / "site-packages"), str(t / "other"),
                                      str(t / "dist-packages" / "x"), str(t / "gone" / "site-packages")])
    monkeypatch.setenv("METALIB_DATA", str(t / "data"))
    monkeypatch.setenv("METALIB_CACHE", str(t / "missing"))
    monkeypatch.setenv("METALIB_CHECKPOINTS", str(t / "py" / "ckpt"))
    assert sandbox.readable_roots() == sorted([t / "data", t / "dist-packages" / "x", t / "lib" / "site-packages",
                                               t / "py", t / "venv"])
    monkeypatch.setenv("METALIB_DATA", "")
    assert t / "data" not in sandbox.readable_roots()


def test_readable_roots_resolve_symlinks(tmp_path, monkeypatch):
    t = tmp_path.resolve()
    (t / "real").mkdir()
    (t / "link").symlink_to(t / "real")
    monkeypatch.setattr(sys, "prefix", str(t / "link"))
    monkeypatch.setattr(sys, "base_prefix", str(t / "link"))
    monkeypatch.setattr(sys, "executable", str(t / "link" / "bin" / "python"))
    monkeypatch.setattr(sys, "path", [])
    for var in ("METALIB_DATA", "METALIB_CACHE", "METALIB_CHECKPOINTS"):
        monkeypatch.delenv(var, raising=False)
    assert sandbox.readable_roots() == [t / "real"]


def _fake_os(euid, environ):
    links = {"/bin": "usr/bin", "/lib64": "usr/lib64"}
    return types.SimpleNamespace(
        path=types.SimpleNamespace(islink=lambda p: p in links, isdir=lambda p: p in ("/lib", "/sbin")),
        readlink=lambda p: links[p], geteuid=lambda: euid, environ=environ)


def test_command_binds_exactly_what_the_sandbox_may_see(tmp_path, monkeypatch):
    import metalib
    installed = Path(metalib.__file__).resolve().parent
    monkeypatch.setattr(sandbox, "readable_roots", lambda: [Path("/opt/data/omniglot"), Path("/usr/lib/python3")])
    monkeypatch.setattr(sandbox, "os", _fake_os(1000, {"METALIB_DATA": "/opt/data/omniglot", "METALIB_CACHE": ""}))
    job, package = tmp_path / "job", tmp_path / "pkg" / "metalib"
    limits = sandbox.Limits(memory_bytes=1, cpu_seconds=2, file_bytes=3, processes=4, open_files=5)
    cmd = sandbox.command(["runner.py", "/grading"], job, package=package, slot=3, limits=limits)
    exe = sys.executable
    assert cmd == [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
        "--symlink", "usr/bin", "/bin", "--ro-bind", "/sbin", "/sbin", "--ro-bind", "/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/data",
        "--perms", "0755", "--dir", "/usr/lib",
        "--ro-bind", "/opt/data/omniglot", "/opt/data/omniglot",
        "--dev", "/dev", "--proc", "/proc",
        "--perms", "0755", "--dir", "/opt/metalib-grading", "--ro-bind", str(package), "/opt/metalib-grading/metalib",
        "--perms", "0755", "--dir", "/grading", "--bind", str(job), "/grading", "--chdir", "/grading",
        "--clearenv",
        "--setenv", "PATH", f"{Path(exe).parent}:/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONPATH", "/opt/metalib-grading", "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
        "--setenv", "IPYTHONDIR", "/tmp/ipython", "--setenv", "JUPYTER_RUNTIME_DIR", "/tmp/jupyter",
        "--setenv", "JUPYTER_DATA_DIR", "/tmp/jupyter-data", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", "MPLBACKEND", "Agg", "--setenv", "METALIB_QUICK", "1", "--setenv", "OMP_NUM_THREADS", "1",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "METALIB_DATA", "/opt/data/omniglot",
        "--", exe, "/opt/metalib-grading/metalib/grading/sandbox.py", "--enter",
        "{'memory_bytes': 1, 'cpu_seconds': 2, 'file_bytes': 3, 'processes': 4, 'open_files': 5}", "-1",
        "--", "runner.py", "/grading"]
    assert not installed.is_relative_to("/opt/data/omniglot")


def test_command_as_root_runs_as_the_slots_user_and_hides_the_installed_package(tmp_path, monkeypatch):
    import metalib
    installed = Path(metalib.__file__).resolve().parent
    monkeypatch.setattr(sandbox, "readable_roots", lambda: [installed.parent])
    monkeypatch.setattr(sandbox, "os", _fake_os(0, {}))
    cmd = sandbox.command(["x"], tmp_path, package=tmp_path / "p")
    assert cmd[:15] == ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                        "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                        "--die-with-parent", "--new-session", "--ro-bind"]
    i = cmd.index("--tmpfs", cmd.index("/tmp") + 1)
    assert cmd[i:i + 4] == ["--tmpfs", str(installed), "--remount-ro", str(installed)]
    assert cmd[i + 4:i + 8] == ["--dev", "/dev", "--proc", "/proc"]
    assert cmd[cmd.index("--enter") + 2] == "60000" and cmd[-2:] == ["--", "x"]
    assert "--setenv" in cmd and "METALIB_DATA" not in cmd
    assert sandbox.Limits() == sandbox.Limits(8 * 2**30, 1800, 256 * 2**20, 256, 1024)


def test_command_with_a_package_under_usr_hides_it_too(tmp_path, monkeypatch):
    fake_pkg = types.SimpleNamespace(__file__="/usr/lib/python3/site-packages/metalib/__init__.py")
    monkeypatch.setitem(sys.modules, "metalib", fake_pkg)
    monkeypatch.setattr(sandbox, "readable_roots", lambda: [])
    monkeypatch.setattr(sandbox, "os", _fake_os(1000, {}))
    cmd = sandbox.command(["x"], tmp_path, package=tmp_path / "p", slot=2)
    i = cmd.index("--remount-ro")
    assert cmd[i - 2:i + 2] == ["--tmpfs", "/usr/lib/python3/site-packages/metalib", "--remount-ro",
                                "/usr/lib/python3/site-packages/metalib"]
    assert cmd[cmd.index("--enter") + 2] == "-1"


def test_enter_sets_every_limit_then_drops_to_the_slots_user(monkeypatch):
    import resource
    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda which, lim: calls.append(("rlimit", which, lim)))
    for name in ("setgroups", "setresgid", "setresuid", "execv"):
        monkeypatch.setattr(os, name, lambda *a, _n=name: calls.append((_n, *a)))
    limits = {"memory_bytes": 11, "cpu_seconds": 12, "file_bytes": 13, "processes": 14, "open_files": 15}
    sandbox.enter(limits, 60002, ["runner.py", "/grading"])
    assert calls == [("rlimit", resource.RLIMIT_AS, (11, 11)), ("rlimit", resource.RLIMIT_CPU, (12, 12)),
                     ("rlimit", resource.RLIMIT_FSIZE, (13, 13)), ("rlimit", resource.RLIMIT_NPROC, (14, 14)),
                     ("rlimit", resource.RLIMIT_NOFILE, (15, 15)), ("rlimit", resource.RLIMIT_CORE, (0, 0)),
                     ("setgroups", []), ("setresgid", 60002, 60002, 60002), ("setresuid", 60002, 60002, 60002),
                     ("execv", sys.executable, [sys.executable, "runner.py", "/grading"])]
    calls.clear()
    sandbox.enter(limits, 0, [])
    assert ("setresuid", 0, 0, 0) in calls
    calls.clear()
    sandbox.enter(limits, -1, ["a"])
    assert [c[0] for c in calls] == ["rlimit"] * 6 + ["execv"]


# ============================================================================ folder.py

import queue  # noqa: E402
from collections import deque  # noqa: E402
import subprocess  # noqa: E402

from metalib.grading import folder  # noqa: E402


def test_score_weighs_public_and_hidden_tests():
    T, F = True, False
    assert folder.HIDDEN_WEIGHT == 0.75 and folder.MAX_MESSAGE == 500
    both = [["a", F, T, ""], ["b", F, F, ""], ["c", T, T, ""], ["d", T, T, ""], ["e", T, F, ""]]
    assert folder.score(2.0, both) == 1.25                  # 2 (0.25 * 1/2 + 0.75 * 2/3)
    assert folder.score(2.0, both[:2]) == 1.0               # public only: all the points
    assert folder.score(3.0, both[2:]) == 2.0               # hidden only: all the points
    assert folder.score(1.0, [["a", F, T, ""], ["b", F, F, ""], ["c", F, F, ""]]) == 0.3333
    assert folder.score(1.0, []) == 0


def test_student_total_is_rounded():
    r = StudentResult("s", "s.ipynb", "graded", {"a": 0.1, "b": 0.2}, {}, {}, [])
    assert r.total == 0.3 and r.similar == {}
    assert StudentResult("s", "f", "x", {"a": 1 / 3}, {}, {}, []).total == 0.3333


def test_clean_caps_messages():
    assert folder._clean("x" * 600) == "x" * 500 and folder._clean(12, cap=1) == "1"


def _grading(assignment, probes=(), expected=None, tmp=None):
    g = object.__new__(folder.Grading)
    g.assignment, g.probes, g.expected = assignment, list(probes), expected or {}
    g.judged = {p.question for p in probes}
    g.timeout, g.submission_timeout, g.isolate, g.judge = 33, 5, False, None
    g.stub, g.solution = [], []
    g.slots = queue.Queue()
    g.slots.put(0)
    return g


def _two_questions():
    tests = (asg.TestCode("t_pub", "def t_pub(): pass", False), asg.TestCode("t_hid", "src2", True))
    return Assignment("hw", Path("hw.ipynb"), (
        Question("q1", 2.0, False, ("f",), ()),
        Question("q2", 1.0, False, ("g", "h"), tests),
        Question("q3", 5.0, True, ("m",), ())))


PROBES = [Probe("q1", "p_pub", False, "result = f(1)"), Probe("q1", "p_hid", True, "result = f(2)")]


def test_job_sends_probes_for_judged_questions_and_tests_for_the_rest():
    g = _grading(_two_questions(), PROBES)
    assert g._job(["a = 1"]) == {"cells": ["a = 1"], "timeout": 33, "questions": [
        {"name": "q1", "functions": ["f"], "probes": [["p_pub", "result = f(1)"], ["p_hid", "result = f(2)"]]},
        {"name": "q2", "functions": ["g", "h"], "tests": [["t_pub", False, "def t_pub(): pass"], ["t_hid", True, "src2"]]}]}


def test_read_result_validates_what_the_sandbox_wrote(tmp_path):
    g = _grading(_two_questions())
    log = tmp_path / "job.log"
    assert g._read_result(tmp_path, 0, log, "stopped after 5 s") == ("stopped after 5 s", [])
    (tmp_path / "result.json").write_text(json.dumps({"status": "s" * 400, "errors": [f"e{i}" + "x" * 500
                                                                                       for i in range(25)]}))
    status, errors = g._read_result(tmp_path, 0, log, None)
    assert status == "s" * 300 and errors == [f"e{i}" + "x" * (400 - len(f"e{i}")) for i in range(20)]
    (tmp_path / "result.json").write_text(json.dumps({"status": 3, "errors": []}))
    assert g._read_result(tmp_path, 9, log, None) == ("the sandbox ended without a result (exit 9): ", [])
    log.write_bytes(b"L" * 400 + b"tail \xff")
    (tmp_path / "result.json").write_text(json.dumps({"status": "ok", "errors": "not a list"}))
    assert g._read_result(tmp_path, -9, log, None) == (
        "the sandbox ended without a result (exit -9): " + "L" * 294 + "tail \ufffd", [])
    (tmp_path / "result.json").write_text(json.dumps({"status": "ok", "errors": []}) + " " * 2**20)
    assert g._read_result(tmp_path, 1, log, None)[0].startswith("the sandbox ended without a result (exit 1)")
    (tmp_path / "result.json").write_text(json.dumps({"status": "graded", "errors": ["e"]}).ljust(2**20))
    assert g._read_result(tmp_path, 0, log, None) == ("graded", ["e"])


def test_read_capped_boundary(tmp_path):
    (tmp_path / "f").write_bytes(b"abcd")
    assert folder._read_capped(tmp_path / "f", 4) == b"abcd"
    with pytest.raises(ValueError, match=r"^f is larger than 3 bytes$"):
        folder._read_capped(tmp_path / "f", 3)


def test_collect_reads_each_questions_reported_tests(tmp_path):
    g = _grading(_two_questions())
    (tmp_path / "tests").mkdir()
    rows = [["t_hid", True, True, ""], ["t_hid", True, False, "second report ignored"], "junk", [1, 2, 3, 4],
            ["t_pub", False, "yes", "m" * 600], ["short", True]]
    (tmp_path / "tests" / "q2.json").write_text(json.dumps(rows))
    assert g._collect(tmp_path, "graded") == {
        "q1": [], "q2": [["t_pub", False, False, "m" * 500], ["t_hid", True, True, ""]]}
    (tmp_path / "tests" / "q2.json").write_text("not json")
    assert g._collect(tmp_path, "graded")["q2"] == [
        ["t_pub", False, False, "not run: the tests timed out or crashed"],
        ["t_hid", True, False, "not run: the tests timed out or crashed"]]
    (tmp_path / "tests" / "q2.json").write_text(json.dumps([["t_pub", False, True, ""]]).ljust(2**20 + 1))
    assert g._collect(tmp_path, "kernel died")["q2"][0] == ["t_pub", False, False, "not run: kernel died"]


def test_collect_judges_probes_outside_the_sandbox(tmp_path):
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    probes = [Probe("q1", "ok", False, ""), Probe("q1", "off", True, ""), Probe("q1", "err", False, ""),
              Probe("q1", "none", True, ""), Probe("q1", "custom", False, "", check=lambda got, exp: None),
              Probe("q1", "loose", True, "", atol=1e-3), Probe("q1", "rel", True, "", atol=0, rtol=1e-3),
              Probe("q1", "boom", False, "", check=lambda got, exp: 1 / 0)]
    g = _grading(_two_questions(), probes, {p.name: x for p in probes})
    out = tmp_path / "outputs"
    out.mkdir()
    for name, value in [("ok", x), ("off", x + 1e-4), ("custom", "anything"), ("loose", x + 1e-4),
                        ("rel", x * (1 + 1e-4)), ("boom", x)]:
        torch.save(value, out / f"{name}.pt")
    (out / "err.err").write_bytes(b"NameError: \xff" + b"z" * 600)
    (out / "ok.err").write_text("ignored: there is an output")
    found = g._collect(tmp_path, "graded")["q1"]
    assert [r[:3] for r in found] == [["ok", False, True], ["off", True, False], ["err", False, False],
                                      ["none", True, False], ["custom", False, True], ["loose", True, True],
                                      ["rel", True, True], ["boom", False, False]]
    assert found[0][3] == "" and found[1][3].startswith("off")
    assert found[2][3] == ("NameError: \ufffd" + "z" * 600)[:500]
    assert found[3][3] == "not run: the tests timed out or crashed"
    assert found[7][3] == "ZeroDivisionError: division by zero"
    assert found[2][3].startswith("NameError: \ufffdzz")


def test_judge_probe_reads_at_most_4096_bytes_of_an_error(tmp_path):
    g = _grading(_two_questions(), [Probe("q1", "e", False, "")], {"e": 1.0})
    (tmp_path / "e.err").write_bytes(b"x" * 4097)
    (row,) = [g._judge_probe(tmp_path, p, "r") for p in g.probes]
    assert row == ["e", False, False, "ValueError: e.err is larger than 4096 bytes"]
    (tmp_path / "e.err").write_bytes(b"x" * 4096)
    assert g._judge_probe(tmp_path, g.probes[0], "r") == ["e", False, False, "x" * 500]
    (tmp_path / "e.err").unlink()
    assert g._judge_probe(tmp_path, g.probes[0], "why") == ["e", False, False, "why"]


def test_result_scores_and_flags_answers_that_reached_a_hidden_reference():
    g = _grading(_two_questions(), PROBES)
    reached = f"NotImplementedError: metalib.maml.adapt {NOT_AVAILABLE}"
    found = {"q1": [["p_pub", False, True, ""], ["p_hid", True, False, reached]],
             "q2": [["t_pub", False, True, ""], ["t_hid", True, True, ""]]}
    r = g._result(Path("/x/alice.ipynb"), "graded", found, ["err"], [], {"q2": ["metalib.x"]}, {"q1": ["sim"], "q2": []})
    assert (r.student, r.file, r.status, r.errors) == ("alice", "alice.ipynb", "graded", ["err"])
    assert r.scores == {"q1": 0.0, "q2": 0.0}
    assert r.flags == {"q1": ["metalib.maml.adapt (not available while grading)"], "q2": ["metalib.x"]}
    assert r.similar == {"q1": ["sim"]} and r.tests == found
    clean = g._result(Path("b.ipynb"), "graded", {**found, "q1": [["p_pub", False, True, ""], ["p_hid", True, False, "x"]]},
                      [], [], {"q1": [], "q2": []})
    assert clean.scores == {"q1": 0.5, "q2": 1.0} and clean.flags == {}
    none = g._result(Path("c.ipynb"), "no code", {}, [], [])
    assert none.scores == {"q1": 0.0, "q2": 0.0} and none.flags == {} and none.similar == {}
    assert none.tests == {"q1": [["p_pub", False, False, "no code"], ["p_hid", True, False, "no code"]],
                          "q2": [["t_pub", False, False, "no code"], ["t_hid", True, False, "no code"]]}
    both = g._result(Path("d.ipynb"), "graded", {"q1": [["p_pub", False, False, reached],
                                                        ["p_hid", True, False, "metalib.rl.x " + NOT_AVAILABLE]]},
                     [], [], {"q1": ["metalib.maml.adapt (not available while grading)", "a.b"]})
    assert both.flags["q1"] == ["a.b", "metalib.maml.adapt (not available while grading)",
                                "metalib.rl.x (not available while grading)"]


def test_by_function_moves_probes_to_the_question_defining_their_function():
    a = Assignment("hw", Path("hw.ipynb"), (Question("qa", 1.0, False, ("alpha", "beta"), ()),
                                            Question("qb", 1.0, False, ("gamma",), ()),
                                            Question("qm", 1.0, True, ("delta",), ())))
    refs_ = {"alpha": None, "gamma": None, "delta": None, "unused": None}
    probes = [Probe("old1", "p1", False, "result = gamma (2)"), Probe("old2", "p2", True, "result = alpha(1)"),
              Probe("old3", "p3", False, "result = my_alpha(1)"), Probe("old4", "p4", False, "result = delta(1)"),
              Probe("old5", "p5", False, "result = alpha"), Probe("old6", "p6", False, "x = gamma(1); y = alpha(2)")]
    moved = folder._by_function(probes, a, refs_)
    assert [(p.name, p.question, p.hidden) for p in moved] == [("p1", "qb", False), ("p2", "qa", True), ("p6", "qa", False)]


def test_demo_cell_errors_are_those_outside_the_answers():
    cells = ["def f():\n    pass", "f()", "x = 1"]
    msg = f"NotImplementedError: m.f {NOT_AVAILABLE}"
    assert folder._demo_cell_error(f"code cell 2: {msg}", cells, {"f"}) is True
    assert folder._demo_cell_error(f"code cell 1: {msg}", cells, {"f"}) is False
    assert folder._demo_cell_error("code cell 2: ValueError: other", cells, {"f"}) is False
    assert folder._demo_cell_error(f"code cell 9: {msg}", cells, {"f"}) is False
    assert folder._demo_cell_error(f"code cell two: {msg}", cells, {"f"}) is False
    assert folder._demo_cell_error(f"code cell 1: {msg}", cells, {"g"}) is True


def _state(pid: int) -> str:
    """A process's state letter ("Z": a zombie, already dead), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_kill_group_ends_the_whole_session_and_tolerates_a_finished_one(tmp_path):
    pidfile = tmp_path / "bg"
    proc = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"],
                            start_new_session=True)
    while not pidfile.exists():
        proc.poll()
    background = int(pidfile.read_text())
    folder._kill_group(proc)
    assert proc.returncode == -9
    for _ in range(200):  # the orphaned sleep is reaped by init some time after the kill
        if _state(background) in ("Z", "X", "gone"):
            break
        subprocess.run(["sleep", "0.01"])
    assert _state(background) in ("Z", "X", "gone")
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    folder._kill_group(done)
    assert done.returncode == 0


def test_stub_cells_read_the_student_notebook_of_the_master(tmp_path, monkeypatch):
    import metalib.assignments as assignments
    monkeypatch.setattr(assignments, "NOTEBOOKS", tmp_path)
    a = Assignment("hw", Path("/masters/hw.ipynb"))
    assert folder._stub_cells(a) == []
    _write(tmp_path, {"cells": [{"cell_type": "code", "source": "stub = 1"}]}, name="hw.ipynb")
    assert folder._stub_cells(a) == ["stub = 1"]


def test_grade_reads_flags_and_runs_only_through_the_last_answer(tmp_path, monkeypatch):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("f",), (asg.TestCode("t", "s", False),)),))
    g = _grading(a)
    g.stub = ["import metalib\ndef f(x):\n    raise NotImplementedError"]
    g.solution = ["import metalib\ndef f(x):\n    return metalib.tasks.y(x)"]
    ran = []

    def run(cells, slot):
        ran.append((cells, slot, g.slots.qsize()))
        return "graded", [f"code cell 3: NotImplementedError: m.x {NOT_AVAILABLE}",
                          f"code cell 2: NotImplementedError: m.x {NOT_AVAILABLE}", "code cell 1: boom"], \
            {"q1": [["t", False, True, ""]]}

    monkeypatch.setattr(g, "_run", run)
    cells = ["import metalib\nimport otter", "def f(x):\n    return metalib.tasks.y(x) + metalib.nets.z", "f(1)",
             "def f(x):\n    return metalib.tasks.y(x) + metalib.nets.z", "after = 1"]
    path = _write(tmp_path, {"cells": [{"cell_type": "code", "source": c} for c in cells]}, name="bob.ipynb")
    r = g.grade(path)
    assert ran == [(["import metalib", cells[1], "f(1)", cells[3]], 0, 0)] and g.slots.qsize() == 1
    # flagged: a metalib name neither the stub nor the master's own answer uses (metalib.tasks.y is the master's)
    assert r.flags == {"q1": ["metalib.nets.z"]} and r.scores == {"q1": 0.0}
    assert r.errors == [f"code cell 2: NotImplementedError: m.x {NOT_AVAILABLE}", "code cell 1: boom"]
    assert r.status == "graded" and r.tests == {"q1": [["t", False, True, ""]]}
    empty = g.grade(_write(tmp_path, {"cells": [{"cell_type": "code", "source": "  \n"},
                                                {"cell_type": "code", "source": "grader.check('q1')"}]}, name="e.ipynb"))
    assert empty.status == "no code" and len(ran) == 1
    bad = g.grade(_write(tmp_path, None, name="x.ipynb", raw=b"{" + b"y" * 300))
    assert bad.status == "not a notebook (not JSON: Expecting property name enclosed in double quotes: line 1 column 2 " \
        "(char 1))"
    missing = tmp_path / ("m" * 200 + ".ipynb")
    assert g.grade(missing).status == "not a notebook (" + f"[Errno 2] No such file or directory: '{missing}'"[:200] + ")"
    assert len(ran) == 1


def test_grade_releases_its_slot_when_the_run_fails(tmp_path, monkeypatch):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("f",), ()),))
    g = _grading(a)
    monkeypatch.setattr(g, "_run", lambda cells, slot: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        g.grade(_write(tmp_path, {"cells": [{"cell_type": "code", "source": "x = 1"}]}))
    assert g.slots.qsize() == 1


def test_grade_folder_refuses_bad_folders(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'nope'} is not a folder of submissions")):
        folder.grade_folder(tmp_path / "nope", _two_questions())
    with pytest.raises(ValueError, match=re.escape(f"the output folder {tmp_path / 'out'} is inside the submissions "
                                                   f"folder {tmp_path}: choose another (grading never writes into "
                                                   "the submissions)")):
        folder.grade_folder(tmp_path, _two_questions(), out=tmp_path / "out")


class _FakeGrading:
    made = []

    def __init__(self, assignment, **kw):
        self.assignment, self.kw, self.closed, self.judge, self.seed = assignment, kw, False, kw["seed"], 99
        _FakeGrading.made.append(self)

    def grade(self, path):
        return StudentResult(path.stem, path.name, "graded", {"q1": 1.0}, {}, {}, [])

    def close(self):
        self.closed = True


def test_grade_folder_grades_every_visible_file_and_writes_the_reports(tmp_path, monkeypatch):
    subs = tmp_path / "subs"
    (subs / "dir").mkdir(parents=True)
    for name in ("b.ipynb", "a.ipynb", ".hidden.ipynb", "c.txt"):
        (subs / name).write_text("{}")
    monkeypatch.setattr(folder, "Grading", _FakeGrading)
    written = []
    monkeypatch.setattr(folder, "write_reports", lambda results, a, out, **kw: written.append((results, a, out, kw)))
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("f",), ()),))
    results = folder.grade_folder(subs, a, progress=False, jobs=3, seed=5, isolate=False, timeout=7,
                                  submission_timeout=8, limits=sandbox.Limits(processes=2))
    assert [r.file for r in results] == ["a.ipynb", "b.ipynb", "c.txt"] and written == []
    g = _FakeGrading.made[-1]
    assert g.closed and g.assignment is a and g.kw == {"timeout": 7, "submission_timeout": 8, "jobs": 3,
                                                       "isolate": False, "seed": 5,
                                                       "limits": sandbox.Limits(processes=2)}
    folder.grade_folder(subs, a, out=tmp_path / "out", progress=False)
    ((res, a2, out, kw),) = written
    assert [r.file for r in res] == ["a.ipynb", "b.ipynb", "c.txt"] and a2 is a and out == tmp_path / "out"
    assert kw == {"isolated": True, "seed": None}
    assert _FakeGrading.made[-1].kw == {"timeout": 60, "submission_timeout": 900, "jobs": 1, "isolate": True,
                                        "seed": None, "limits": sandbox.Limits()}
    folder.grade_folder(subs, a, out=str(tmp_path / "out2"), progress=False, seed=3, isolate=False)
    assert written[-1][2] == tmp_path / "out2" and written[-1][3] == {"isolated": False, "seed": 99}


# ============================================================================ gradescope.py

from metalib.grading import gradescope  # noqa: E402


def test_results_json_by_hand():
    a = _two_questions()
    r = StudentResult("s", "s.ipynb", "graded", {}, {
        "q1": [["p1", False, True, ""], ["p2", True, True, "ok"], ["p3", True, False, ""]],
        "q2": [["t_pub", False, True, ""], ["t_pub2", False, False, "bad"]]}, {"q2": ["metalib.x", "metalib.y"]},
        [f"e{i}" for i in range(7)])
    assert gradescope.results_json(r, a) == {
        "tests": [
            {"name": "q1: p1", "score": 0.5, "max_score": 0.5, "visibility": "visible", "output": "passed"},
            {"name": "q1: p2 (hidden)", "score": 0.75, "max_score": 0.75, "visibility": "after_published",
             "output": "ok"},
            {"name": "q1: p3 (hidden)", "score": 0.0, "max_score": 0.75, "visibility": "after_published",
             "output": "failed"},
            {"name": "q2: t_pub", "score": 0.0, "max_score": 0.5, "visibility": "visible",
             "output": "scored 0: the answer uses metalib.x, metalib.y instead of solving. passed"},
            {"name": "q2: t_pub2", "score": 0.0, "max_score": 0.5, "visibility": "visible",
             "output": "scored 0: the answer uses metalib.x, metalib.y instead of solving. bad"}],
        "output": "Status: graded. Cells that raised: e0; e1; e2; e3; e4",
        "visibility": "visible", "stdout_visibility": "hidden"}
    hidden_only = StudentResult("s", "s.ipynb", "no code", {}, {"q1": [["p2", 1, True, ""], ["p3", 1, True, ""]]}, {}, [])
    data = gradescope.results_json(hidden_only, a)
    assert [(t["name"], t["score"], t["max_score"]) for t in data["tests"]] == [("q1: p2 (hidden)", 1.0, 1.0),
                                                                               ("q1: p3 (hidden)", 1.0, 1.0)]
    assert data["output"] == "Status: no code."
    third = StudentResult("s", "s.ipynb", "graded", {}, {"q2": [["a", False, True, ""]] * 3}, {}, [])
    assert [t["score"] for t in gradescope.results_json(third, a)["tests"]] == [0.3333] * 3


class _OneGrading:
    seen = []

    def __init__(self, assignment, **kw):
        self.assignment, self.kw, self.closed = assignment, kw, False
        _OneGrading.seen.append(self)

    def grade(self, path):
        self.path = path
        return "graded " + path.name

    def close(self):
        self.closed = True


def test_grade_submission_dir_prefers_the_masters_file_name(tmp_path, monkeypatch):
    monkeypatch.setattr(gradescope, "Grading", _OneGrading)
    master = _master(tmp_path, [("raw", "# BEGIN QUESTION\nname: q1"), ("raw", "# END QUESTION")], name="hw.ipynb")
    sub = tmp_path / "sub"
    (sub / "deep" / ".ipynb_checkpoints").mkdir(parents=True)
    (sub / "deep" / ".ipynb_checkpoints" / "a.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no .ipynb in the submission ({sub}): upload your hw.ipynb")):
        gradescope.grade_submission_dir(sub, master)
    (sub / "b.ipynb").write_text("{}")
    (sub / "deep" / "a.ipynb").write_text("{}")
    result, a = gradescope.grade_submission_dir(sub, master, stub=tmp_path / "stub.ipynb", timeout=3,
                                                submission_timeout=4)
    g = _OneGrading.seen[-1]
    assert result == "graded b.ipynb" and g.path == sub / "b.ipynb" and g.closed
    assert a.name == "hw" and [q.name for q in a.questions] == ["q1"] and g.assignment == a
    assert g.kw == {"timeout": 3, "submission_timeout": 4, "stub": tmp_path / "stub.ipynb"}
    (sub / "deep" / "hw.ipynb").write_text("{}")
    assert gradescope.grade_submission_dir(sub, master)[0] == "graded hw.ipynb"
    assert _OneGrading.seen[-1].kw == {"timeout": 60, "submission_timeout": 900, "stub": None}


def test_main_run_writes_results_atomically(tmp_path, monkeypatch, capsys):
    calls = []
    a = _two_questions()
    r = StudentResult("s", "s.ipynb", "graded", {}, {"q2": [["t", False, True, ""]]}, {}, [])

    def fake(submission, master, **kw):
        calls.append((submission, master, kw))
        return r, a

    monkeypatch.setattr(gradescope, "grade_submission_dir", fake)
    out = tmp_path / "res" / "results.json"
    assert gradescope.main(["run", "--master", "m.ipynb", "--submission", "subdir", "--results", str(out)]) == 0
    assert calls == [(Path("subdir"), Path("m.ipynb"), {"stub": None, "timeout": 60})]
    assert json.loads(out.read_text()) == gradescope.results_json(r, a)
    assert out.read_text().startswith('{\n "tests": [\n  {\n')   # indent=1
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json"]
    assert capsys.readouterr().out == "Status: graded.\n"
    gradescope.main(["run", "--master", "m", "--stub", "s", "--submission", "d", "--results", str(out),
                     "--timeout", "5"])
    assert calls[-1] == (Path("d"), Path("m"), {"stub": Path("s"), "timeout": 5})

    def missing(*a, **k):
        raise FileNotFoundError("no .ipynb here")

    monkeypatch.setattr(gradescope, "grade_submission_dir", missing)
    gradescope.main(["run", "--master", "m", "--submission", "d", "--results", str(out)])
    assert json.loads(out.read_text()) == {"score": 0.0, "output": "no .ipynb here", "tests": []}
    with pytest.raises(SystemExit):
        gradescope.main(["run", "--submission", "d", "--results", str(out)])
    with pytest.raises(SystemExit):
        gradescope.main([])


def test_build_packs_scripts_wheel_notebooks_and_checkpoints(tmp_path, monkeypatch):
    import zipfile

    import metalib.assignments as assignments
    import metalib.checkpoint as checkpoint
    (tmp_path / "nb").mkdir()
    (tmp_path / "ck").mkdir()
    monkeypatch.setattr(assignments, "NOTEBOOKS", tmp_path / "nb")
    monkeypatch.setattr(checkpoint, "checkpoint_dir", lambda: tmp_path / "ck")
    master = tmp_path / "07_x.ipynb"
    master.write_text("master")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nb' / '07_x.ipynb'} is missing: run "
                                                          "`python -m metalib assign` first")):
        gradescope.build(master, tmp_path / "out")
    (tmp_path / "nb" / "07_x.ipynb").write_text("student")
    (tmp_path / "ck" / "b.pt").write_text("B")
    (tmp_path / "ck" / "a.pt").write_text("A")
    (tmp_path / "ck" / "notes.txt").write_text("no")
    wheel = tmp_path / "metalib-1.0-py3-none-any.whl"
    wheel.write_text("wheel")
    path = gradescope.build(master, tmp_path / "out" / "deeper", wheel=wheel)
    assert path == tmp_path / "out" / "deeper" / "07_x-gradescope.zip"
    assert sorted(p.name for p in path.parent.iterdir()) == ["07_x-gradescope.zip"]
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["setup.sh", "run_autograder", "wheels/metalib-1.0-py3-none-any.whl",
                                "assignment/07_x.ipynb", "assignment/student/07_x.ipynb", "checkpoints/a.pt",
                                "checkpoints/b.pt"]
        assert [z.getinfo(n).external_attr >> 16 for n in ("setup.sh", "run_autograder")] == [0o755, 0o755]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist()[2:])  # the files written from disk
        setup, run = z.read("setup.sh").decode(), z.read("run_autograder").decode()
        assert z.read("assignment/07_x.ipynb") == b"master" and z.read("assignment/student/07_x.ipynb") == b"student"
        assert z.read("checkpoints/a.pt") == b"A" and z.read("wheels/metalib-1.0-py3-none-any.whl") == b"wheel"
    assert '"$ROOT/venv/bin/python" -m pip install --quiet "torch==2.13.0" ' \
           '${METALIB_AG_TORCH_INDEX---index-url https://download.pytorch.org/whl/cpu}\n' in setup
    assert 'ROOT="${METALIB_AG_ROOT:-/autograder}"' in setup and "echo \"metalib autograder for 07_x installed" in setup
    assert '--master "$ROOT/source/assignment/07_x.ipynb" \\\n  --stub "$ROOT/source/assignment/student/07_x.ipynb"' in run


def test_wheel_builds_this_project_and_says_when_it_cannot(tmp_path, monkeypatch):
    from metalib.assignments import PROJECT
    seen = []

    def fake_run(cmd, **kw):
        seen.append((cmd, kw))
        (tmp_path / "metalib-0.1-py3-none-any.whl").write_text("w")
        (tmp_path / "metalib-0.2-py3-none-any.whl").write_text("w")
        return types.SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(gradescope.subprocess, "run", fake_run)
    assert gradescope._wheel(tmp_path) == tmp_path / "metalib-0.2-py3-none-any.whl"
    assert seen == [([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                      str(tmp_path), str(PROJECT)], {"capture_output": True, "text": True})]
    monkeypatch.setattr(gradescope.subprocess, "run",
                        lambda cmd, **kw: types.SimpleNamespace(returncode=1, stderr="x" * 900 + "END"))
    with pytest.raises(RuntimeError, match=r"^could not build the metalib wheel: x{797}END$"):
        gradescope._wheel(tmp_path)
    monkeypatch.setattr(gradescope.subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(returncode=0, stderr="e"))
    with pytest.raises(RuntimeError, match=r"^could not build the metalib wheel: e$"):
        gradescope._wheel(tmp_path / "empty")


# ============================================================================ runner.py (the parts that run in-process)

from metalib.grading import runner  # noqa: E402


class _FakeClient:
    """nbexec.SlicedNotebookClient (an nbclient.NotebookClient) stand-in: records its settings, 'runs' by attaching the outputs given."""
    made = []
    outputs: dict = {}
    raises = None

    def __init__(self, nb, **kw):
        self.nb, self.kw = nb, kw
        _FakeClient.made.append(self)

    def execute(self):
        for i, outs in self.outputs.items():
            self.nb.cells[i].outputs = outs
        if self.raises is not None:
            raise self.raises


def _error(ename, evalue):
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": []}


def test_execute_builds_the_notebook_and_reports_cell_errors(tmp_path, monkeypatch):
    from metalib.grading import nbexec
    monkeypatch.setattr(nbexec, "SlicedNotebookClient", _FakeClient)  # the client runner.execute uses
    monkeypatch.setattr(_FakeClient, "outputs", {1: [{"output_type": "stream", "text": "hi"}, _error("E1", "v" * 400),
                                                     _error("E2", "second")],
                                                 3: [_error("ZeroDivisionError", "division by zero")],
                                                 4: [_error("InTests", "not a submission cell")]})
    job = {"cells": ["a = 1", "b = 2", "c = 1 / 0"], "timeout": "7", "questions": [
        {"name": "q1", "functions": ["f"], "tests": [["t1", False, "src1"]]},
        {"name": "q2", "functions": ["g"], "probes": [["p1", "code1"]]},
        {"name": "q3", "functions": ["h"], "tests": [], "probes": []}]}
    out = runner.execute(job, tmp_path)
    assert out == {"status": "graded", "errors": ["code cell 1: E1: " + "v" * 300,
                                                  "code cell 3: ZeroDivisionError: division by zero"]}
    client = _FakeClient.made[-1]
    sources = [c.source for c in client.nb.cells]
    assert sources == [runner.PREAMBLE, "a = 1", "b = 2", "c = 1 / 0",
                       runner.TEST_CELL.format(tests=[("t1", False, "src1")], functions=["f"],
                                               path=str(tmp_path / "tests" / "q1.json")),
                       runner.PROBE_CELL.format(probes=[("p1", "code1")], functions=["g"], path=str(tmp_path / "outputs"))]
    assert all(c.cell_type == "code" for c in client.nb.cells) and (tmp_path / "tests").is_dir()
    assert client.nb.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    kw = dict(client.kw)
    manager = kw.pop("kernel_manager_class")
    assert kw == {"timeout": 7, "allow_errors": True, "interrupt_on_timeout": True,
                  "error_on_timeout": {"ename": "Timeout", "evalue": "cell ran over 7 s", "traceback": []},
                  "kernel_name": "python3", "resources": {"metadata": {"path": str(tmp_path)}}}
    from jupyter_client import AsyncKernelManager
    assert issubclass(manager, AsyncKernelManager) and manager().transport == "ipc"
    runner.execute(job, tmp_path)  # the tests folder may exist already


def test_execute_reports_a_dead_kernel_or_a_failed_client(tmp_path, monkeypatch):
    from nbclient.exceptions import DeadKernelError

    from metalib.grading import nbexec
    monkeypatch.setattr(nbexec, "SlicedNotebookClient", _FakeClient)
    monkeypatch.setattr(_FakeClient, "outputs", {1: [_error("MemoryError", "")]})
    job = {"cells": ["x"], "timeout": 1, "questions": []}
    monkeypatch.setattr(_FakeClient, "raises", DeadKernelError("k" * 300))
    assert runner.execute(job, tmp_path) == {"status": "kernel died (" + "k" * 200 + ")",
                                             "errors": ["code cell 1: MemoryError: "]}
    monkeypatch.setattr(_FakeClient, "raises", RuntimeError("r" * 300))
    assert runner.execute(job, tmp_path)["status"] == "execution failed (RuntimeError: " + "r" * 200 + ")"


def test_cell_error_finds_the_first_error_output():
    assert runner._cell_error(4, {"outputs": [{"output_type": "stream"}, _error("A", 1), _error("B", 2)]}) == \
        "code cell 4: A: 1"
    assert runner._cell_error(1, {"outputs": [{"output_type": "stream"}]}) is None
    assert runner._cell_error(1, {}) is None
    assert runner._cell_error(2, {"outputs": [{"output_type": "error"}]}) == "code cell 2: None: None"


def test_main_reads_the_job_and_writes_the_result(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "execute", lambda job, workdir: seen.append((job, workdir)) or {"status": "s", "errors": []})
    (tmp_path / "job.json").write_text(json.dumps({"cells": ["x"]}))
    assert runner.main([str(tmp_path / "." )]) == 0
    assert seen == [({"cells": ["x"]}, tmp_path.resolve())]
    assert json.loads((tmp_path / "result.json").read_text()) == {"status": "s", "errors": []}
    monkeypatch.setattr(sys, "argv", ["runner.py", str(tmp_path)])
    assert runner.main() == 0 and seen[-1][1] == tmp_path.resolve()


# ============================================================================ folder.Grading: set-up, package, run

def _tiny_judge(make=None):
    def probes(rng):
        x = rng.randrange(1000)
        return [Probe("old", "pub", False, "result = f(2)"), Probe("old", "hid", True, f"result = f({x})"),
                Probe("old", "dtype", False, "torch.set_default_dtype(torch.float64)\nresult = f(1)"),
                Probe("old", "orphan", False, "result = 5  # f is never called")]
    return Judge("hw", make or probes, lambda: {"f": lambda v: v * 10},
                 unavailable={"metalib.grading.pyast": ("parse",)},
                 guarded={"metalib.grading.submission": ("code_cells", "through_last_answer")})


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A Grading of a one-question assignment whose judge stubs pyast.parse and guards two submission functions."""
    master = _master(tmp_path, [("raw", "# BEGIN QUESTION\nname: q1"), ("raw", "# BEGIN SOLUTION"),
                                ("code", "import metalib\ndef f(v):\n    return v * 10"), ("raw", "# END SOLUTION"),
                                ("raw", "# END QUESTION")], name="hw.ipynb")
    monkeypatch.setattr(folder, "judge_for", lambda name: _tiny_judge() if name == "hw" else None)
    checked = []
    monkeypatch.setattr(sandbox, "check_available", lambda: checked.append(1) or "/usr/bin/bwrap")
    claim = sandbox.claim_slots  # this test's own slots: other grading runs on the machine hold theirs
    monkeypatch.setattr(sandbox, "claim_slots", lambda n: claim(n, tmp_path / "slots"))
    stub = _write(tmp_path, {"cells": [{"cell_type": "code", "source": "stub = 1"}]}, name="stub.ipynb")
    made = []

    def make(**kw):
        g = folder.Grading(Assignment.from_master(master), **kw)
        made.append(g)
        return g

    yield make, master, stub, checked
    for g in made:
        g.close()


def test_grading_draws_probes_from_its_seed_and_computes_expected_values(tiny):
    import random
    make, master, stub, checked = tiny
    dtype = torch.get_default_dtype()
    g = make(seed=11, isolate=False, stub=stub, jobs=3, timeout=9, submission_timeout=10,
             limits=sandbox.Limits(processes=7))
    assert torch.get_default_dtype() == dtype and checked == []
    x = random.Random(11).randrange(1000)
    assert g.seed == 11 and [(p.name, p.question, p.code) for p in g.probes] == [
        ("pub", "q1", "result = f(2)"), ("hid", "q1", f"result = f({x})"),
        ("dtype", "q1", "torch.set_default_dtype(torch.float64)\nresult = f(1)")]   # "orphan" calls no answer: dropped
    assert g.expected == {"pub": 20, "hid": 10 * x, "dtype": 10, "orphan": 5}
    assert g.judged == {"q1"} and g.stub == ["stub = 1"] and g.solution == ["import metalib\ndef f(v):\n    return v * 10"]
    assert (g.timeout, g.submission_timeout, g.isolate, g.limits) == (9, 10, False, sandbox.Limits(processes=7))
    assert sorted(g.slots.get() for _ in range(3)) == [0, 1, 2] and g.slots.empty()
    assert g.judge.assignment == "hw" and g.workspace.name.startswith("metalib-grade-")
    g2 = make(isolate=True, jobs=0)
    assert checked == [1] and g2.slots.qsize() == 1 and g2.slots.get() == 0 and g2.isolate is True
    assert isinstance(g2.seed, int) and 0 <= g2.seed < 2**62 and g2.seed != make(isolate=False).seed
    assert g2.limits == sandbox.Limits() and (g2.timeout, g2.submission_timeout) == (60, 900)


def test_grading_restores_the_default_dtype_when_a_reference_fails(tiny, monkeypatch):
    make, master, stub, _ = tiny

    def bad(rng):
        return [Probe("q1", "p", False, "torch.set_default_dtype(torch.float64)\nresult = 1 / 0")]

    monkeypatch.setattr(folder, "judge_for", lambda name: _tiny_judge(bad))
    dtype = torch.get_default_dtype()
    with pytest.raises(ZeroDivisionError):
        make(isolate=False, seed=1)
    assert torch.get_default_dtype() == dtype


def test_grading_package_hides_and_guards_the_judges_references(tiny):
    import inspect

    import metalib
    import metalib.grading.pyast as pyast_mod
    import metalib.grading.submission as sub_mod
    make, master, stub, _ = tiny
    g = make(isolate=False, seed=1, stub=stub)
    pkg = g.package
    assert pkg == g.workspace / "package" / "metalib"
    src = Path(metalib.__file__).resolve().parent
    copied = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    want = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and p.suffix != ".pyc")
    assert copied == want
    assert (pkg / "grading" / "pyast.py").read_text() == stub_source(inspect.getsource(pyast_mod), ("parse",),
                                                                       "metalib.grading.pyast")
    assert (pkg / "grading" / "submission.py").read_text() == guard.guard_source(
        inspect.getsource(sub_mod), ("code_cells", "through_last_answer"), "metalib.grading.submission")
    assert (pkg / "checks.py").read_text() == (src / "checks.py").read_text()
    modes = {p.stat().st_mode & 0o777 for p in [pkg.parent, *pkg.rglob("*")] if p.is_dir()}
    assert modes == {0o755}
    assert {p.stat().st_mode & 0o777 for p in pkg.rglob("*") if p.is_file()} == {0o644}
    workspace = g.workspace
    g.close()
    assert not workspace.exists()
    g.close()  # twice: nothing left to remove, no error


def test_grading_without_a_judge_copies_the_package_untouched(tiny, monkeypatch):
    import metalib
    make, master, stub, _ = tiny
    monkeypatch.setattr(folder, "judge_for", lambda name: None)
    g = make(isolate=False, seed=4)
    src = Path(metalib.__file__).resolve().parent
    assert g.judge is None and g.probes == [] and g.expected == {} and g.judged == set()
    assert (g.package / "grading" / "pyast.py").read_text() == (src / "grading" / "pyast.py").read_text()
    assert g.stub == []  # no student notebook of that name


def test_run_without_sandbox_runs_the_packages_runner_and_cleans_up(tiny, monkeypatch):
    make, master, stub, _ = tiny
    g = make(isolate=False, seed=1, stub=stub, submission_timeout=30)
    seen = {}

    class FakePopen:
        def __init__(self, cmd, **kw):
            seen.update(cmd=cmd, kw=kw)
            self.job = Path(kw["cwd"])
            seen["job_json"] = json.loads((self.job / "job.json").read_text())
            (self.job / "result.json").write_text(json.dumps({"status": "graded", "errors": ["code cell 1: E: x"]}))
            (self.job / "outputs").mkdir()
            torch.save(20, self.job / "outputs" / "pub.pt")
            kw["stdout"].write(b"log line")
            self.pid, self.returncode = 123456789, 0

        def wait(self, timeout=None):
            seen.setdefault("timeouts", []).append(timeout)

    killed = []
    monkeypatch.setattr(folder.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(folder, "_kill_group", lambda proc: killed.append(proc.pid))
    status, errors, found = g._run(["a = 1"], 2)
    job = Path(seen["kw"]["cwd"])
    assert job.parent == g.workspace and job.name.startswith("job2-") and not job.exists()
    assert not job.with_suffix(".log").exists()
    assert seen["cmd"] == [sys.executable, str(g.package / "grading" / "runner.py"), str(job)]
    env = seen["kw"].pop("env")
    assert env == {**os.environ, "PYTHONPATH": str(g.package.parent), "METALIB_QUICK": "1", "MPLBACKEND": "Agg"}
    assert seen["kw"]["stderr"] == subprocess.STDOUT and seen["kw"]["stdin"] == subprocess.DEVNULL
    assert seen["kw"]["start_new_session"] is True
    assert seen["timeouts"] == [30] and killed == [123456789]
    assert seen["job_json"] == g._job(["a = 1"])
    assert (status, errors) == ("graded", ["code cell 1: E: x"])
    assert found == {"q1": [["pub", False, True, ""], ["hid", True, False, "not run: the tests timed out or crashed"],
                            ["dtype", False, False, "not run: the tests timed out or crashed"]]}


def test_run_in_the_sandbox_and_past_the_time_limit(tiny, monkeypatch):
    make, master, stub, _ = tiny
    g = make(isolate=True, seed=1, stub=stub, submission_timeout=3)
    seen = {}

    def fake_command(inner, job, **kw):
        seen.update(inner=inner, job=job, mode=job.stat().st_mode & 0o777, **kw)
        return ["sandboxed"]

    class SlowPopen:
        def __init__(self, cmd, **kw):
            seen.update(cmd=cmd, env=kw["env"])
            self.pid, self.returncode = 1, -9

        def wait(self, timeout=None):
            if timeout is not None:
                raise subprocess.TimeoutExpired("x", timeout)

    chowned = []
    monkeypatch.setattr(sandbox, "command", fake_command)
    monkeypatch.setattr(folder.subprocess, "Popen", SlowPopen)
    monkeypatch.setattr(folder, "_kill_group", lambda proc: None)
    monkeypatch.setattr(folder.os, "chown", lambda path, uid, gid: chowned.append((uid, gid)))
    monkeypatch.setattr(folder.os, "geteuid", lambda: 0)
    status, errors, found = g._run(["a = 1"], 4)
    assert status == "stopped after 3 s" and errors == []
    assert found["q1"][0] == ["pub", False, False, "not run: stopped after 3 s"]
    assert seen["inner"] == ["/opt/metalib-grading/metalib/grading/runner.py", "/grading"]
    assert seen["job"].name.startswith("job4-") and seen["mode"] == 0o755
    assert (seen["slot"], seen["limits"], seen["package"]) == (4, g.limits, g.package)
    assert seen["cmd"] == ["sandboxed"] and seen["env"] is None and chowned == [(60004, 60004)]
    monkeypatch.setattr(folder.os, "geteuid", lambda: 1000)
    g._run(["a = 1"], 0)
    assert chowned == [(60004, 60004)]


def test_main_build_writes_one_zip_per_master_with_one_wheel(tmp_path, monkeypatch, capsys):
    import metalib.assignments as assignments
    wheels, built, asked = [], [], []
    monkeypatch.setattr(gradescope, "_wheel", lambda dest: wheels.append(dest) or dest / "w.whl")
    monkeypatch.setattr(assignments, "masters", lambda names: asked.append(names) or [Path("m/01_a.ipynb"),
                                                                                     Path("m/02_b.ipynb")])
    monkeypatch.setattr(gradescope, "build", lambda m, out, wheel: built.append((m, out, wheel)) or Path(out) / m.name)
    assert gradescope.main(["build", "--out", "zips", "01", "02"]) == 0
    assert asked == [["01", "02"]] and len(wheels) == 1
    assert built == [(Path("m/01_a.ipynb"), "zips", wheels[0] / "w.whl"), (Path("m/02_b.ipynb"), "zips", wheels[0] / "w.whl")]
    assert capsys.readouterr().out == "wrote zips/01_a.ipynb\nwrote zips/02_b.ipynb\n"
    gradescope.main(["build"])
    assert asked[-1] is None and built[-1][1] == "autograder"


# ============================================================================ judges/common.py

from metalib.grading.judges import common  # noqa: E402


def test_nothing_names_an_unfinished_answer():
    common.nothing(0, "f(1)")
    with pytest.raises(AssertionError, match="^" + re.escape(
            "f(1) is None: the function returned nothing. Did you finish the exercise (replace `...`) and `return` "
            "the result?") + "$"):
        common.nothing(None, "f(1)")


def test_tensors_walks_dicts_lists_and_tensors():
    x = torch.tensor([1.0, 2.0])
    check = common.tensors("out")
    check(x + 5e-6, x)                                              # atol/rtol 1e-5 by default
    with pytest.raises(AssertionError, match="^out"):
        check(x + 1e-3, x)
    common.tensors("out", atol=1e-2, rtol=0)(x + 1e-3, x)
    common.tensors("out", atol=0, rtol=1e-2)(x * 1.001, x)
    _fails_check(check, None, x, f"out is None: {common.NOTHING}")
    _fails_check(check, [1.0, 2.0], x, "out should be a tensor, got list")
    check(x.double(), x)                                            # dtype not checked unless asked
    _fails_check(common.tensors("out", dtype=True), x.double(), x,
                 "out should keep the dtype torch.float32, got torch.float64")
    nan = torch.tensor([float("nan"), 1.0])
    _fails_check(common.tensors("out", finite=True), nan, x, "out has 1 NaN/inf entries out of 2")
    exp = {"value": x, "grad": [x, 2.0], "echo": torch.zeros(1)}
    skip = common.tensors("out", skip=("echo",))
    skip({"value": x, "grad": [x, 2.0]}, exp)
    _fails_check(skip, {"value": x, "grad": [x, 3.0]}, exp, "out grad[1]: expected 2.0, got 3.0")
    _fails_check(skip, {"value": x + 1, "grad": [x, 2.0]}, exp, str(_assertion(lambda: compare(x + 1, x, name="out",
                                                                                                atol=1e-5, rtol=1e-5))))
    _fails_check(skip, {"grad": [x, 2.0]}, exp, f"out is None: {common.NOTHING}")
    _fails_check(check, {"value": x, "grad": [x, 2.0]}, exp, f"out echo is None: {common.NOTHING}")
    _fails_check(skip, [x], exp, "out: expected keys ['echo', 'grad', 'value'], got list")
    _fails_check(skip, {"value": x, "grad": (x,)}, exp, "out grad: expected 2 results, got tuple")
    _fails_check(skip, {"value": x, "grad": 5}, exp, "out grad: expected 2 results, got int")
    _fails_check(common.tensors("out", dtype=True), [x.double()], [x],
                 "out[0] should keep the dtype torch.float32, got torch.float64")
    _fails_check(common.tensors("out", finite=True), {"a": nan}, {"a": x}, "out a has 1 NaN/inf entries out of 2")
    _fails_check(common.tensors("out", atol=0, rtol=0), [1.5], [1.0], "out[0]: expected 1.0, got 1.5")


def _assertion(fn):
    with pytest.raises(AssertionError) as err:
        fn()
    return err.value


def test_numbers_checks_each_answer_within_its_tolerance():
    check = common.numbers("area", [(2.0, "a"), (0.123456, 3)], lambda e: 0.1 * abs(e) + 1e-9,
                           lambda a, g, e: f"hint {a[1]} {g:.1f} {e:.1f}")
    check([4.0, 1.05], [4.2, 1.0])
    _fails_check(check, 4.0, [4.0, 1.0], "area should return a number")
    _fails_check(check, [4.0], [4.0, 1.0], "area should return a number")
    _fails_check(check, [None, 1.0], [4.0, 1.0], f"area(2, 'a') is None: {common.NOTHING}")
    _fails_check(check, [4.0, "str"], [4.0, 1.0], "area(0.1235, 3) should return a number, got str")
    _fails_check(check, [4.0, 1], [4.0, 1.0], "area(0.1235, 3) should return a number, got 1")
    _fails_check(check, [float("nan"), 1.0], [4.0, 1.0], "area(2, 'a') = nan: hint a nan 4.0")
    _fails_check(check, [4.5, 1.0], [4.0, 1.0], "area(2, 'a') = 4.5: hint a 4.5 4.0")
    exact = common.numbers("f", [(1,)], lambda e: 0.5, lambda a, g, e: "h")
    exact([1.4], [1.0])
    _fails_check(exact, [1.5], [1.0], "f(1) = 1.5: h")                                # the tolerance is exclusive
    assert common.number_probe("f", [(1, 2.5)]) == common.HELPERS + "result = [_num(f(*a)) for a in [(1, 2.5)]]\n"


def test_names_checks_a_set_prediction():
    allowed = {"more_data_help", "more_data_hurt", "x", "y"}
    pub = common.names("predict", allowed, right=False, both=("data",))
    hid = common.names("predict", allowed, right=True, wrong="think again")
    pub({"type": "set", "items": ["x", "more_data_help"]}, {"items": ["y"]})
    _fails_check(pub, {"type": "list", "items": []}, None, "predict() should return a set of names, got list")
    _fails_check(pub, ["x"], None, "predict() should return a set of names, got list")
    _fails_check(pub, {"items": ["x"]}, None, "predict() should return a set of names, got None")
    _fails_check(pub, {"type": "set", "items": ["x", "z", "w"]}, None,
                 "['w', 'z'] are not among the names ['more_data_help', 'more_data_hurt', 'x', 'y']")
    _fails_check(pub, {"type": "set", "items": []}, None,
                 "choose at least one of ['more_data_help', 'more_data_hurt', 'x', 'y']")
    _fails_check(pub, {"type": "set"}, None, "choose at least one of ['more_data_help', 'more_data_hurt', 'x', 'y']")
    _fails_check(pub, {"type": "set", "items": ["more_data_help", "more_data_hurt"]}, None,
                 "more data cannot both help and hurt")
    hid({"type": "set", "items": ["more_data_help", "more_data_hurt"]}, {"items": ["more_data_hurt", "more_data_help"]})
    _fails_check(hid, {"type": "set", "items": ["x"]}, {"items": ["x", "y"]}, "think again")
    _fails_check(common.names("p", allowed, right=True), {"type": "set", "items": ["x"]}, {"items": ["y"]}, "")


def test_choice_probe_and_its_checks():
    src = common.choice_probe("pick")
    assert src == common.PLAIN + ("answer = pick()\n"
                                  "items = sorted(str(a) for a in answer) if isinstance(answer, (set, frozenset, list, "
                                  "tuple)) else None\n"
                                  "result = {'set': isinstance(answer, (set, frozenset)), 'items': items, "
                                  "'repr': repr(answer)[:80]}\n")
    ns = {}
    exec(src.replace("answer = pick()", "answer = ['b', 'a']"), ns)
    assert ns["result"] == {"set": False, "items": ["a", "b"], "repr": "['b', 'a']"}
    exec(src.replace("answer = pick()", "answer = frozenset({'b'})"), ns)
    assert ns["result"] == {"set": True, "items": ["b"], "repr": "frozenset({'b'})"}
    exec(src.replace("answer = pick()", "answer = 'x' * 100"), ns)
    assert ns["result"] == {"set": False, "items": None, "repr": repr("x" * 100)[:80]}
    opts = {"b", "a", "c"}
    pub, one = common.is_choice(opts, "letters"), common.is_choice(opts, "letters", one=True)
    pub({"set": True, "items": ["a", "c"], "repr": "x"}, None)
    one({"set": True, "items": ["b"]}, None)
    _fails_check(pub, {"set": False, "items": ["a"], "repr": "['a']"}, None,
                 "return a set of letters, e.g. {'a'}, got ['a']")
    _fails_check(pub, {"set": True, "items": None, "repr": "r" * 100}, None,
                 "return a set of letters, e.g. {'a'}, got " + "r" * 80)
    _fails_check(pub, {"set": True, "items": ["a", "z", "y"], "repr": ""}, None,
                 "['y', 'z'] are not among the options ['a', 'b', 'c']")
    _fails_check(one, {"set": True, "items": ["a", "b"], "repr": "{'a', 'b'}"}, None,
                 "return a set of one of ['a', 'b', 'c'], e.g. {'a'}, got {'a', 'b'}")
    _fails_check(pub, {"set": True, "items": [], "repr": "set()"}, None,
                 "the empty set: at least one of ['a', 'b', 'c'] is right")
    _fails_check(one, {"set": True, "items": [], "repr": "set()"}, None,
                 "return a set of one of ['a', 'b', 'c'], e.g. {'a'}, got set()")
    for bad in (None, {"set": 1, "items": []}, {"items": []}, {"set": True, "items": "ab"},
                {"set": True, "items": ["a", 2]}):
        _fails_check(pub, bad, None, "the answer did not come back")
    assert common._items({"set": False, "items": None}) == (False, None, "")
    assert common._items({"set": True, "items": ["a"], "repr": 5}) == (True, ["a"], "5")
    right = common.right_choice(lambda answer, right: f"{sorted(answer)} vs {len(right)}")
    right({"set": False, "items": ["b", "a"]}, {"items": ["a", "b"]})
    _fails_check(right, {"set": True, "items": ["a"]}, {"items": ["a", "b"]}, "['a'] vs 2")
    _fails_check(right, {"set": True, "items": None}, {"items": ["a"]}, "[] vs 1")
    _fails_check(common.right_choice(lambda a, r: ""), {"set": True, "items": ["a"]}, {"items": ["b"]}, "not quite")


def test_number_is_a_finite_python_number():
    assert common.number(3, "n") == 3 and common.number(2.5, "n") == 2.5
    _fails_check(lambda g, e: common.number(g, "rate"), True, None, "rate: return a Python number, got bool")
    _fails_check(lambda g, e: common.number(g, "rate"), torch.tensor(1.0), None, "rate: return a Python number, got Tensor")
    _fails_check(lambda g, e: common.number(g, "rate"), float("inf"), None, "rate: got inf, not a finite number")
    _fails_check(lambda g, e: common.number(g, "rate"), float("nan"), None, "rate: got nan, not a finite number")


# ============================================================================ what the first mutation run left alive

def test_similarity_skips_missing_and_short_answers_without_stopping():
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("missing", "short", "mc"), ()),))
    pasted = ["def short(x):\n    return x", _copy_of("metalib.evaluate", "mean_ci95", "mc")]
    assert refs.similar_to_library(pasted, a, _FakeJudge({"metalib.evaluate": ()})) == {
        "q1": ["mc ~ metalib.evaluate.mean_ci95 (1.00)"]}


def test_similarity_compares_long_functions_without_autojunk():
    """Past 200 nodes difflib's autojunk would ignore the commonest node types; a copy of checks.assert_close
    (299 nodes) without one line of its message is still flagged."""
    import inspect

    import metalib.checks as checks_mod
    src = inspect.getsource(checks_mod.assert_close).replace("def assert_close(", "def ac(", 1)
    lines = src.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.strip().startswith('f"{name} differs: max abs error'))
    close = "".join(lines[:cut] + lines[cut + 1:])
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("ac",), ()),))
    (flag,) = refs.similar_to_library([close], a, _FakeJudge({"metalib.checks": ()}))["q1"]
    assert flag.startswith("ac ~ metalib.checks.assert_close (") and 0.9 <= float(flag[-5:-1]) < 1.0


def test_report_joins_several_flags_and_manual_questions(tmp_path):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("f",), ()), Question("m1", 1.0, True, (), ()),
                                            Question("m2", 1.0, True, (), ())))
    r = StudentResult("s", "s.ipynb", "graded", {"q1": 1.0}, {"q1": [["t", False, True, ""]]}, {},
                      [], {"q1": ["a ~ x", "b ~ y"]})
    csv_path, md_path = report.write_reports([r], a, tmp_path / "new" / "deeper" / "out")  # parents created
    text = md_path.read_text()
    assert "Manually graded questions (not scored here): m1, m2." in text
    assert "  * FLAGGED for review: close to the library's source: a \\~ x, b \\~ y" in text
    assert list(csv.reader(io.StringIO(csv_path.read_text())))[1][-1] == "q1: close to the library's source: a ~ x, b ~ y"


def test_atomic_write_opens_utf8_without_newline_translation(tmp_path, monkeypatch):
    import builtins
    opened = []

    def spy(*args, **kw):
        opened.append((args[1:], kw))
        return builtins.open(*args, **kw)

    monkeypatch.setattr(report, "open", spy, raising=False)
    report._atomic_write(tmp_path / "x.csv", "a\r\nb")
    assert opened == [(("w",), {"encoding": "utf-8", "newline": ""})]


def test_pyast_default_filename_is_unknown():
    with pytest.raises(SyntaxError) as err:
        pyast.parse("def (")
    assert err.value.filename == "<unknown>"


def test_code_cells_skips_a_worksheet_without_cells(tmp_path):
    v3 = {"worksheets": [{"name": "empty"}, {"cells": [{"cell_type": "code", "input": "x = 1"}]}]}
    assert submission.code_cells(_write(tmp_path, v3)) == ["x = 1"]


def test_test_names_are_found_on_any_line_and_solutions_add_up(tmp_path):
    path = _master(tmp_path, [("raw", "# BEGIN QUESTION\nname: q1"), ("raw", "# BEGIN SOLUTION"),
                              ("code", "def f():\n    pass"), ("code", "def g():\n    pass"), ("raw", "# END SOLUTION"),
                              ("raw", "# BEGIN TESTS"), ("code", "import math\ndef test_late():\n    pass"),
                              ("raw", "# END TESTS"), ("raw", "# END QUESTION")])
    (q,) = Assignment.from_master(path).questions
    assert q.functions == ("f", "g") and [t.name for t in q.tests] == ["test_late"]


def test_check_available_gives_the_trial_sandbox_a_minute(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sandbox, "BWRAP", str(_fake_bwrap(tmp_path, 0)))
    monkeypatch.setattr(sandbox.subprocess, "run", lambda cmd, **kw: seen.append(kw) or
                        subprocess.CompletedProcess(cmd, 0, "", ""))
    sandbox.check_available()
    assert seen == [{"capture_output": True, "text": True, "timeout": 60}]


def test_compare_casts_the_answer_to_the_expected_dtype_first():
    compare(torch.tensor([0.1], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float32))  # 0.1 rounds to 0.1f
    _fails(1.5, 1.0, ("n" * 400 + ": expected 1.0, got 1.5")[:300], name="n" * 400)


def test_load_output_refuses_pickles_even_where_the_safe_default_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.save(Probe("q", "n", False, "c"), tmp_path / "code.pt")
    with pytest.raises(ValueError, match="not plain data"):
        load_output(tmp_path / "code.pt")


def test_load_output_quotes_the_loaders_own_error(tmp_path, monkeypatch):
    import metalib.grading.judge as judge_mod
    torch.save(Probe("q", "n", False, "c"), tmp_path / "code.pt")
    with pytest.raises(Exception) as direct:
        torch.load(tmp_path / "code.pt", weights_only=True)
    with pytest.raises(ValueError) as err:
        load_output(tmp_path / "code.pt")
    assert str(err.value).endswith(f": {type(direct.value).__name__}: {str(direct.value)[:200]}")
    (tmp_path / "big.pt").write_bytes(b"x" * (3 * 2**20 + 1))
    monkeypatch.setattr(judge_mod, "MAX_OUTPUT_BYTES", 3 * 2**20)
    with pytest.raises(ValueError, match=r"^the output is larger than 3 MiB$"):
        load_output(tmp_path / "big.pt")


def test_gradescope_help_names_the_module_and_its_commands(capsys):
    with pytest.raises(SystemExit):
        gradescope.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m metalib.grading.gradescope ")
    flat = " ".join(out.split())
    assert "One autograder for Gradescope: the same sandboxed grader, packed in a zip that installs itself." in flat
    assert "gradescope build --out autograder" not in flat  # the first paragraph only
    assert "write a Gradescope autograder zip per master notebook" in " ".join(out.split())
    assert "grade /autograder/submission (what run_autograder calls)" in " ".join(out.split())
    with pytest.raises(SystemExit):
        gradescope.main(["build", "--help"])
    assert "master notebook prefixes (default: all)" in " ".join(capsys.readouterr().out.split())


def test_gradescope_run_needs_a_submission_and_a_results_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gradescope, "grade_submission_dir", lambda *a, **k: pytest.fail("must not grade"))
    for argv in (["run", "--master", "m", "--results", "r"], ["run", "--master", "m", "--submission", "s"]):
        with pytest.raises(SystemExit):
            gradescope.main(argv)
    assert "the following arguments are required" in capsys.readouterr().err


def test_gradescope_run_creates_the_results_folders(tmp_path, monkeypatch):
    a = _two_questions()
    r = StudentResult("s", "s.ipynb", "graded", {}, {}, {}, [])
    monkeypatch.setattr(gradescope, "grade_submission_dir", lambda *args, **kw: (r, a))
    out = tmp_path / "new" / "res" / "results.json"
    gradescope.main(["run", "--master", "m", "--submission", "d", "--results", str(out)])
    assert json.loads(out.read_text())["output"] == "Status: graded."


def test_build_twice_into_the_same_folder_and_with_a_wheel_built_on_the_way(tmp_path, monkeypatch):
    import zipfile

    import metalib.assignments as assignments
    import metalib.checkpoint as checkpoint
    (tmp_path / "nb").mkdir()
    monkeypatch.setattr(assignments, "NOTEBOOKS", tmp_path / "nb")
    monkeypatch.setattr(checkpoint, "checkpoint_dir", lambda: tmp_path / "ck")
    (tmp_path / "nb" / "00_a.ipynb").write_text("s")
    master = tmp_path / "00_a.ipynb"
    master.write_text("m")
    built = []

    def fake_wheel(dest):
        built.append((dest, dest.is_dir()))
        whl = dest / "metalib-9-py3-none-any.whl"
        whl.write_text("built")
        return whl

    monkeypatch.setattr(gradescope, "_wheel", fake_wheel)
    path = gradescope.build(master, tmp_path / "out")
    assert gradescope.build(master, tmp_path / "out") == path      # the folder may exist already
    assert len(built) == 2 and all(is_dir for _, is_dir in built) and not built[0][0].exists()  # a temporary folder
    with zipfile.ZipFile(path) as z:
        assert z.read("wheels/metalib-9-py3-none-any.whl") == b"built"


def test_wheel_takes_the_last_of_several(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        for v in ("0.1", "0.2", "0.3"):
            (tmp_path / f"metalib-{v}-py3-none-any.whl").write_text("w")
        return types.SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(gradescope.subprocess, "run", fake_run)
    assert gradescope._wheel(tmp_path) == tmp_path / "metalib-0.3-py3-none-any.whl"


def test_grade_reports_similarity_and_returns_its_slot(tmp_path, monkeypatch):
    a = Assignment("hw", Path("hw.ipynb"), (Question("q1", 1.0, False, ("mc",), ()),))
    g = _grading(a)
    g.judge = _FakeJudge({"metalib.evaluate": ()})
    slots = []
    monkeypatch.setattr(g, "_run", lambda cells, slot: slots.append(slot) or ("graded", [], {}))
    path = _write(tmp_path, {"cells": [{"cell_type": "code", "source": _copy_of("metalib.evaluate", "mean_ci95", "mc")}]})
    r = g.grade(path)
    assert r.similar == {"q1": ["mc ~ metalib.evaluate.mean_ci95 (1.00)"]} and r.errors == []
    g.grade(path)
    assert slots == [0, 0]
    blank = g.grade(_write(tmp_path, {"cells": [{"cell_type": "code", "source": ""}]}, name="blank.ipynb"))
    assert blank.errors == [] and blank.status == "no code"
    broken = g.grade(_write(tmp_path, None, name="broken.ipynb", raw=b"nope"))
    assert broken.errors == [] and broken.similar == {} and broken.flags == {}


def test_grading_seed_is_drawn_from_the_whole_62_bit_range(tiny, monkeypatch):
    make, master, stub, checked = tiny
    asked = []

    class FakeSystemRandom:
        def randrange(self, n):
            asked.append(n)
            return n - 1

    monkeypatch.setattr(folder.random, "SystemRandom", FakeSystemRandom)
    g = make(isolate=False)
    assert asked == [2**62] and g.seed == 2**62 - 1


def test_grading_defaults_to_one_sandboxed_slot(tiny):
    make, master, stub, checked = tiny
    g = make()
    assert checked == [1] and g.isolate is True and g.slots.qsize() == 1


def test_isolated_gradings_hold_their_own_slots_until_closed(tiny):
    make, *_ = tiny
    first, second = make(jobs=2), make()
    assert [first.slots.get(), first.slots.get()] == [0, 1] and second.slots.get() == 2
    first.close()
    assert make(jobs=3).slots.queue == deque([0, 1, 3])


def test_claim_slots_gives_each_run_its_own_slots_until_it_lets_go(tmp_path):
    a, held_a = sandbox.claim_slots(2, tmp_path)
    b, held_b = sandbox.claim_slots(3, tmp_path)
    assert (a, b) == ([0, 1], [2, 3, 4])
    held_a[0].close()
    c, held_c = sandbox.claim_slots(1, tmp_path)
    assert c == [0]
    for lock in held_a[1:] + held_b + held_c:
        lock.close()
    assert sandbox.claim_slots(5, tmp_path)[0] == [0, 1, 2, 3, 4]


def test_claim_slots_says_what_to_do_when_other_runs_hold_them_and_lets_go_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_SLOTS", 3)
    _, held = sandbox.claim_slots(2, tmp_path)
    with pytest.raises(sandbox.SandboxUnavailable) as err:
        sandbox.claim_slots(2, tmp_path)
    assert str(err.value) == (f"2 sandbox slots wanted but other grading runs hold all but 1 of 3 (lock files in "
                              f"{tmp_path}): wait for them to finish, or use fewer --jobs")
    assert sandbox.claim_slots(1, tmp_path)[0] == [2]  # the failed claim let go of slot 2


def test_claim_slots_keeps_its_locks_in_a_private_folder_per_user(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))
    slots, held = sandbox.claim_slots(1)
    folder = tmp_path / f"metalib-sandbox-slots-{os.geteuid()}"
    assert slots == [0] and (folder / "0.lock").is_file() and folder.stat().st_mode & 0o777 == 0o700
    held[0].close()


def test_grading_without_a_master_file_has_no_solution_cells(tiny, tmp_path, monkeypatch):
    make, master, stub, checked = tiny
    monkeypatch.setattr(folder, "judge_for", lambda name: None)
    a = Assignment("hw", tmp_path / "gone.ipynb", (Question("q1", 1.0, False, ("f",), ()),))
    g = folder.Grading(a, isolate=False, seed=1)
    try:
        assert g.solution == []
    finally:
        g.close()


def test_collect_reads_every_question_after_a_judged_one_and_survives_short_rows(tmp_path):
    g = _grading(_two_questions(), PROBES, {"p_pub": 1.0, "p_hid": 1.0})
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "q2.json").write_text('[["t_pub", false], ["t_pub", false, true, ""]]')  # a short row first
    found = g._collect(tmp_path, "graded")
    assert set(found) == {"q1", "q2"} and found["q2"][0] == ["t_pub", False, True, ""]


def test_judge_probe_hands_the_check_what_came_back_and_what_was_expected(tmp_path):
    seen = []
    probe = Probe("q1", "c", False, "", check=lambda got, exp: seen.append((got, exp)))
    g = _grading(_two_questions(), [probe], {"c": {"want": 1}})
    torch.save([1, 2], tmp_path / "c.pt")
    assert g._judge_probe(tmp_path, probe, "r") == ["c", False, True, ""]
    assert seen == [([1, 2], {"want": 1})]


def test_package_leaves_out_bytecode_and_opens_permissions(tiny, tmp_path, monkeypatch):
    import inspect

    import metalib
    import metalib.grading.pyast as pyast_mod
    import metalib.grading.submission as sub_mod
    make, master, stub, _ = tiny
    fake = tmp_path / "site" / "metalib"
    (fake / "grading" / "__pycache__").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "grading" / "pyast.py").write_text(inspect.getsource(pyast_mod))
    (fake / "grading" / "submission.py").write_text(inspect.getsource(sub_mod))
    (fake / "grading" / "__pycache__" / "pyast.cpython-311.pyc").write_bytes(b"\0")
    (fake / "grading" / "stray.pyc").write_bytes(b"\0")
    (fake / "data").mkdir(mode=0o700)
    (fake / "data" / "notes.txt").write_text("x")
    (fake / "data" / "notes.txt").chmod(0o600)
    (fake / "data").chmod(0o700)
    monkeypatch.setattr(metalib, "__file__", str(fake / "__init__.py"))
    g = make(isolate=False, seed=1, stub=stub)
    files = sorted(str(p.relative_to(g.package)) for p in g.package.rglob("*"))
    assert files == ["__init__.py", "data", "data/notes.txt", "grading", "grading/pyast.py", "grading/submission.py"]
    assert (g.package / "data").stat().st_mode & 0o777 == 0o755
    assert (g.package / "data" / "notes.txt").stat().st_mode & 0o777 == 0o644


def test_run_survives_a_job_folder_that_vanished_and_says_how_it_ended(tiny, monkeypatch):
    import shutil as _shutil
    make, master, stub, _ = tiny
    g = make(isolate=False, seed=1, stub=stub)

    class VanishingPopen:
        def __init__(self, cmd, **kw):
            kw["stdout"].write(b"the last words")
            _shutil.rmtree(kw["cwd"])
            self.pid, self.returncode = 1, 3

        def wait(self, timeout=None):
            pass

    monkeypatch.setattr(folder.subprocess, "Popen", VanishingPopen)
    monkeypatch.setattr(folder, "_kill_group", lambda proc: None)
    status, errors, found = g._run(["a = 1"], 0)
    assert status == "the sandbox ended without a result (exit 3): the last words" and errors == []
    assert sorted(p.name for p in g.workspace.iterdir()) == ["package"]


def test_run_that_fails_before_starting_keeps_its_own_error(tiny, monkeypatch):
    make, master, stub, _ = tiny
    g = make(isolate=False, seed=1, stub=stub)

    def broken(cells):
        raise RuntimeError("cannot write the job")

    monkeypatch.setattr(g, "_job", broken)
    with pytest.raises(RuntimeError, match="cannot write the job"):
        g._run(["a = 1"], 0)
    assert sorted(p.name for p in g.workspace.iterdir()) == ["package"]


def test_run_as_root_gives_the_job_folder_to_the_slots_user(tiny, monkeypatch):
    make, master, stub, _ = tiny
    g = make(isolate=True, seed=1, stub=stub)
    chowned = []
    monkeypatch.setattr(sandbox, "command", lambda inner, job, **kw: ["x"])
    monkeypatch.setattr(folder.subprocess, "Popen", lambda cmd, **kw: types.SimpleNamespace(
        pid=1, returncode=0, wait=lambda timeout=None: None))
    monkeypatch.setattr(folder, "_kill_group", lambda proc: None)
    monkeypatch.setattr(folder.os, "chown", lambda path, uid, gid: chowned.append((Path(path), uid, gid)))
    monkeypatch.setattr(folder.os, "geteuid", lambda: 0)
    g._run(["a = 1"], 1)
    ((path, uid, gid),) = chowned
    assert path.parent == g.workspace and path.name.startswith("job1-") and uid == gid == 60001


def test_grade_folder_reads_a_master_path_and_shows_progress_unless_told_not_to(tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.ipynb").write_text("{}")
    master = _master(tmp_path, [("raw", "# BEGIN QUESTION\nname: q1"), ("raw", "# END QUESTION")], name="hw.ipynb")
    monkeypatch.setattr(folder, "Grading", _FakeGrading)
    folder.grade_folder(subs, master)
    g = _FakeGrading.made[-1]
    assert g.assignment.name == "hw" and [q.name for q in g.assignment.questions] == ["q1"]
    assert "grading hw" in capsys.readouterr().err
    folder.grade_folder(subs, str(master), progress=False)
    assert capsys.readouterr().err == ""


def test_grade_folder_grades_one_at_a_time_unless_given_jobs(tmp_path, monkeypatch):
    import threading
    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(4):
        (subs / f"{i}.ipynb").write_text("{}")
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    class Counting(_FakeGrading):
        def grade(self, path):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            threading.Event().wait(0.05)
            with lock:
                state["now"] -= 1
            return super().grade(path)

    monkeypatch.setattr(folder, "Grading", Counting)
    a = _two_questions()
    folder.grade_folder(subs, a, progress=False)
    assert state["most"] == 1
    folder.grade_folder(subs, a, progress=False, jobs=0)
    assert state["most"] == 1


# ============================================================================ judges/welcome.py (notebook 00's judge)

from metalib.grading.judges import welcome  # noqa: E402


def test_welcome_probe_records_forbidden_calls_around_the_answer():
    code = welcome._probe("torch.zeros(2, 3)")
    assert code == common.RECORDER + ("z = torch.zeros(2, 3)\n"
                                      "with _Recorder(('softmax', 'log_softmax', 'special_softmax')) as _rec:\n"
                                      "    p = softmax(z)\n"
                                      "result = {'p': p, 'called': list(_rec.called)}\n")
    honest = {"torch": torch, "softmax": lambda z: (z - z.max(-1, keepdim=True).values).exp() /
              (z - z.max(-1, keepdim=True).values).exp().sum(-1, keepdim=True)}
    exec(code, honest)
    assert honest["result"]["called"] == [] and torch.allclose(honest["result"]["p"], torch.full((2, 3), 1 / 3))
    cheat = {"torch": torch, "softmax": lambda z: torch.nn.functional.log_softmax(z, -1).exp() + 0 * z.softmax(-1)}
    exec(code, cheat)
    assert cheat["result"]["called"] == ["log_softmax", "softmax"]


def test_welcome_check_messages():
    x = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    check = welcome._softmax("softmax(z)", rtol=1e-5)
    check({"p": x.float(), "called": []}, {"p": x})
    _fails_check(check, x, {"p": x}, "the probe's measurement did not come back")
    _fails_check(check, {"p": x, "called": "softmax"}, {"p": x}, "the probe's measurement did not come back")
    _fails_check(check, {"p": x, "called": ["log_softmax", "softmax"]}, {"p": x},
                 "`log_softmax` was called, but this exercise asks you not to use softmax / log_softmax / "
                 "special_softmax: build softmax from exp and sum")
    _fails_check(check, {"p": None, "called": []}, {"p": x}, f"softmax(z) is None: {common.NOTHING}")
    _fails_check(check, {"called": []}, {"p": x}, f"softmax(z) is None: {common.NOTHING}")
    with pytest.raises(AssertionError, match="^softmax\\(z\\)"):
        check({"p": x + 1e-3, "called": []}, {"p": x})
    welcome._softmax("s", rtol=0, atol=1e-2)({"p": x + 1e-3, "called": []}, {"p": x})     # atol reaches the values
    with pytest.raises(AssertionError, match="should keep the dtype"):
        welcome._softmax("s", rtol=1e-5, dtype=True)({"p": x.float(), "called": []}, {"p": x})
    with pytest.raises(AssertionError, match="NaN/inf"):
        welcome._softmax("s", rtol=1e-5, finite=True)({"p": x * float("inf"), "called": []}, {"p": x})


def test_welcome_row_sums_are_over_the_last_dimension_of_any_shape():
    e = torch.full((2, 1, 2), 0.5, dtype=torch.float64)
    welcome._softmax("s", rtol=1e-4, sums=True)({"p": e, "called": []}, {"p": e})


def test_welcome_check_of_row_sums():
    off = torch.tensor([[0.5, 0.5 + 2e-5]], dtype=torch.float64)   # within rtol 1e-4 of the expected, sums to 1 + 2e-5
    loose = welcome._softmax("s", rtol=1e-4)
    loose({"p": off, "called": []}, {"p": torch.tensor([[0.5, 0.5]], dtype=torch.float64)})
    with pytest.raises(AssertionError, match=r"^row sums differs"):
        welcome._softmax("s", rtol=1e-4, sums=True)({"p": off, "called": []},
                                                   {"p": torch.tensor([[0.5, 0.5]], dtype=torch.float64)})
    ok = torch.tensor([[0.5, 0.5 + 5e-6]], dtype=torch.float64)    # a row-sum error below 1e-5 passes
    welcome._softmax("s", rtol=1e-4, sums=True)({"p": ok.float(), "called": []},
                                               {"p": torch.tensor([[0.5, 0.5]], dtype=torch.float64)})


def test_welcome_probes_draw_their_inputs_as_documented():
    rng = _ScriptedRng(3, 4, 2, 6, 9, 7.1234, 2, 1.23456, -2.5, 1200.04, 2500.06, 1.111, -2.222, 4242)
    probes = welcome.make_probes(rng)
    assert rng.calls == [("randint", 3, 4), ("randint", 2, 6), ("randint", 2, 6), ("randint", 2, 6),
                         ("randint", 5, 13), ("uniform", 5.0, 12.0), ("randint", 2, 9), ("gauss", 0, 4), ("gauss", 0, 4),
                         ("uniform", 500, 3000), ("uniform", 500, 3000), ("uniform", -3, 3), ("uniform", -3, 3),
                         ("randrange", 10**6)]
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q1", "test_softmax_matches_torch", False), ("q1", "test_softmax_is_stable", False),
        ("q1", "test_softmax_any_shape", True), ("q1", "test_softmax_float64_and_1d", True),
        ("q1", "test_softmax_large_logits_other_rows", True)]
    assert [p.code for p in probes] == [welcome._probe(z) for z in (
        "torch.randn(4, 7, generator=torch.Generator().manual_seed(0))",
        "torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])",
        "7.123 * torch.randn((4, 2, 6, 9), generator=torch.Generator().manual_seed(4242))",
        "torch.tensor([1.2346, -2.5], dtype=torch.float64)",
        "torch.tensor([[1200.0, 1201.11, 1197.78], [-2500.1, 0.0, 2500.1]])")]
    assert welcome.EPS32 == 2.0 ** -23 and welcome.FORBIDDEN == ("softmax", "log_softmax", "special_softmax")


def _tolerance_edges(check, expected, rtol, atol, name=None):
    """The check passes just inside its tolerance atol + rtol |expected| and fails just outside it
    (0.01% either way), with a message that starts with the probe's name."""
    bound = atol + rtol * expected.abs()
    check({"p": expected + (1 - 1e-4) * bound, "called": []}, {"p": expected})
    with pytest.raises(AssertionError, match=None if name is None else "^" + re.escape(name) + " differs: "):
        check({"p": expected + (1 + 1e-4) * bound, "called": []}, {"p": expected})


def test_welcome_probe_tolerances():
    import random
    probes = {p.name: p for p in welcome.make_probes(random.Random(5))}
    e = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    _tolerance_edges(probes["test_softmax_matches_torch"].check, e, 1e-5, 1e-6, "softmax(z)")
    _tolerance_edges(probes["test_softmax_is_stable"].check, e, welcome.EPS32 * 1002, 1e-6,
                     "softmax of large logits (subtract the row maximum before exp)")
    _tolerance_edges(probes["test_softmax_float64_and_1d"].check, e, 1e-10, 1e-12, "softmax of a float64 vector")
    _tolerance_edges(probes["test_softmax_large_logits_other_rows"].check, e, welcome.EPS32 * 3100, 1e-6,
                     "softmax of other large logits (subtract the row maximum before exp)")
    nan32 = torch.tensor([[float("nan"), 0.3, 0.5]])
    with pytest.raises(AssertionError, match="should keep the dtype"):  # finite is off there: the dtype is named first
        probes["test_softmax_float64_and_1d"].check({"p": nan32, "called": []}, {"p": e})
    with pytest.raises(AssertionError, match="^softmax of a float64 vector should keep the dtype"):
        probes["test_softmax_float64_and_1d"].check({"p": e.float(), "called": []}, {"p": e})
    for name in ("test_softmax_is_stable", "test_softmax_any_shape", "test_softmax_large_logits_other_rows"):
        with pytest.raises(AssertionError, match="NaN/inf"):
            probes[name].check({"p": e * float("inf"), "called": []}, {"p": e})
    any_shape = probes["test_softmax_any_shape"]
    scale = float(any_shape.code.split("z = ")[1].split(" *")[0])
    dims = any_shape.code.split("torch.randn((")[1].split(")")[0].count(",") + 1
    msg = f"softmax of a {dims}-d tensor, over the last dimension"
    with pytest.raises(AssertionError, match="^" + re.escape(msg)):
        any_shape.check({"p": e + 1e-3, "called": []}, {"p": e})
    _tolerance_edges(any_shape.check, torch.tensor([[0.5, 0.5]], dtype=torch.float64), welcome.EPS32 * scale * 6, 1e-6,
                     msg)


def test_welcome_any_shape_probe_also_checks_the_row_sums():
    """Every entry within its tolerance, yet rows that no longer sum to 1 (13 entries, each almost atol +
    rtol |p| too large: 13e-6 + rtol in all, past the row sums' 1e-5 + 1e-5): the any-shape check fails them."""
    rng = _ScriptedRng(3, 2, 3, 4, 13, 12.0, 2, 0.5, 0.5, 1000.0, 1000.0, 0.0, 0.0, 7)
    any_shape = {p.name: p for p in welcome.make_probes(rng)}["test_softmax_any_shape"]
    e = torch.full((2, 3, 4, 13), 1 / 13, dtype=torch.float64)
    bound = 1e-6 + welcome.EPS32 * 12.0 * 6 * e
    any_shape.check({"p": e + 0.2 * bound, "called": []}, {"p": e})
    with pytest.raises(AssertionError, match=r"^row sums differs"):
        any_shape.check({"p": e + 0.99 * bound, "called": []}, {"p": e})


def test_welcome_references_are_float64_softmax_over_the_last_dimension():
    ref = welcome.references()["softmax"]
    z = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    p = ref(z)
    torch.testing.assert_close(ref(torch.stack([z, z, z])), torch.stack([p, p, p]))  # over the last dimension of 3-d
    assert p.dtype == torch.float64
    want = torch.tensor([[math.exp(1) / (math.exp(1) + math.exp(2)), math.exp(2) / (math.exp(1) + math.exp(2))],
                         [1 / (1 + math.exp(2)), math.exp(2) / (1 + math.exp(2))]], dtype=torch.float64)
    torch.testing.assert_close(p, want)
    assert welcome.JUDGE.assignment == "00_welcome" and welcome.JUDGE.make_probes is welcome.make_probes
    assert welcome.JUDGE.references is welcome.references


def test_tensors_passes_its_options_down_to_nested_entries():
    x = torch.tensor([1.0, 2.0])
    nan64 = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    both = common.tensors("out", finite=True, dtype=True)      # NaN/inf is reported before the dtype
    nan_first = "has 1 NaN/inf entries out of 2"
    for got, exp, where in [(nan64, x, "out"), ({"a": nan64}, {"a": x}, "out a"), ([nan64], [x], "out[0]")]:
        _fails_check(both, got, exp, f"{where} {nan_first}")
    _fails_check(common.tensors("out", dtype=True), nan64, x,
                 "out should keep the dtype torch.float32, got torch.float64")      # finite is off by default
    _fails_check(common.tensors("out", dtype=True), {"a": x.double()}, {"a": x},
                 "out a should keep the dtype torch.float32, got torch.float64")
    skip = common.tensors("out", skip=("echo",))
    skip({"outer": {"v": x}}, {"outer": {"echo": 1, "v": x}})
    skip([{"v": x}], [{"echo": 1, "v": x}])
    common.tensors("n", atol=1e-2, rtol=0)(1.005, 1.0)         # plain numbers get the tolerances too
    common.tensors("n", atol=0, rtol=1e-2)(1.005, 1.0)


def test_gradescope_help_lines_read_exactly():
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        gradescope.main(["--help"])
    lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    assert "build write a Gradescope autograder zip per master notebook" in lines
    assert "run grade /autograder/submission (what run_autograder calls)" in lines
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        gradescope.main(["build", "--help"])
    assert "names master notebook prefixes (default: all)" in [" ".join(line.split()) for line in out.getvalue().splitlines()]


def test_welcome_finite_probes_report_nan_before_a_wrong_shape():
    import random
    probes = {p.name: p for p in welcome.make_probes(random.Random(3))}
    e = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    bad = torch.tensor([float("nan"), 1.0])                       # NaN, and the wrong shape too
    for name in ("test_softmax_is_stable", "test_softmax_any_shape", "test_softmax_large_logits_other_rows"):
        with pytest.raises(AssertionError, match=r" has 1 NaN/inf entries out of 2$"):
            probes[name].check({"p": bad, "called": []}, {"p": e})
    for name in ("test_softmax_matches_torch", "test_softmax_float64_and_1d"):
        with pytest.raises(AssertionError, match=r" has shape \(2,\), expected \(1, 3\)$"):
            probes[name].check({"p": bad.double(), "called": []}, {"p": e})
