"""tools/mutants.py (the `make mutants` driver): its table, score and equivalent-mutant handling,
on made-up mutmut results (this test runs no mutation testing)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutants_driver", PROJECT / "tools" / "mutants.py")
drv = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = drv  # dataclasses look their module up there
_spec.loader.exec_module(drv)

P = "metalib.checks.x_assert_close__mutmut_"


def fake(status: dict[str, str], diffs: dict[str, str] | None = None) -> "drv.ModuleResult":
    return drv.ModuleResult("checks.py", {P + k: v for k, v in status.items()},
                            {P + k: v for k, v in (diffs or {}).items()}, seconds=12.0)


def test_score_counts_timeouts_as_detected_and_no_tests_as_undetected():
    r = fake({"1": "killed", "2": "killed", "3": "timeout", "4": "survived", "5": "no tests", "6": "suspicious"})
    c = drv.classify(r, {})
    assert c["total"] == 6
    assert c["counts"] == {"killed": 2, "survived": 1, "no tests": 1, "timeout": 1, "other": 1}
    assert c["score"] == pytest.approx(3 / 6)
    assert set(c["undetected"]) == {P + "4", P + "5", P + "6"}


def test_equivalent_mutant_leaves_the_denominator_only_while_its_line_matches():
    r = fake({"1": "killed", "2": "survived", "3": "survived"},
             diffs={"2": "-    x = a + b\n+    x = b + a", "3": "-    y = 1\n+    y = 2"})
    equivalent = {P + "2": {"line": "x = b + a", "reason": "addition commutes"},
                  P + "3": {"line": "y = 3", "reason": "the code has changed since"}}
    c = drv.classify(r, equivalent)
    assert c["equivalent"] == {P + "2": "addition commutes"}
    assert set(c["stale"]) == {P + "3"}  # listed but no longer the same mutation: still counts
    assert c["counts"]["survived"] == 1 and c["score"] == pytest.approx(1 / 2)
    text = drv.render([r], equivalent)
    assert f"`{P}2`: equivalent: addition commutes" in text
    assert f"`{P}3`: survived (stale equivalent entry" in text


def test_a_killed_mutant_listed_as_equivalent_still_counts_as_killed():
    r = fake({"1": "killed"}, diffs={"1": "-    a = 1\n+    a = 2"})
    c = drv.classify(r, {P + "1": {"line": "a = 2", "reason": "wrongly listed"}})
    assert c["equivalent"] == {} and c["score"] == 1.0


def test_table_row_and_undetected_list():
    r = fake({"1": "killed", "2": "killed", "3": "killed", "4": "survived"}, diffs={"4": "-    a < b\n+    a <= b"})
    text = drv.render([r], {})
    lines = text.splitlines()
    assert lines[0].startswith("| module | mutants | killed | survived | no tests | timeout |")
    assert "| `checks.py` | 4 | 3 | 1 | 0 | 0 | 0 | 0 | 75.0% | 12 s |" in lines
    assert f"- `{P}4`: survived" in text and "+    a <= b" in text


def test_empty_module_has_no_score():
    assert math.isnan(drv.classify(fake({}), {})["score"])


def test_equivalent_file_entries_are_complete(tmp_path):
    assert isinstance(drv.load_equivalent(), dict)  # the shipped file parses
    bad = tmp_path / "eq.yml"
    bad.write_text("- mutant: m\n  line: x\n")
    with pytest.raises(SystemExit, match="reason"):
        drv.load_equivalent(bad)


def test_every_core_module_and_its_tests_exist():
    for module, tests in drv.TARGETS.items():
        assert (PROJECT / "metalib" / module).exists(), module
        for t in tests:
            assert (PROJECT / t).is_file(), t
    assert drv.slug("rl/rl2.py") == "rl_rl2" and drv.slug("grading/") == "grading"
    assert drv.module_prefix("rl/rl2.py") == "metalib.rl.rl2."
    assert drv._is_target("grading/", Path("grading/runner.py")) and not drv._is_target("maml.py", Path("maml_train.py"))


def test_workspace_config_is_valid_toml_for_mutmut_and_pytest():
    cfg = tomllib.loads(drv.workspace_config("grading/"))
    mm = cfg["tool"]["mutmut"]
    assert mm["only_mutate"] == ["metalib/grading/*"]
    assert mm["pytest_add_cli_args_test_selection"] == drv.tests_for("grading/")
    assert mm["pytest_add_cli_args"][:2] == ["-m", "not slow"]
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert cfg["tool"]["pytest"]["ini_options"]["markers"] == project["markers"]
    assert "testpaths" not in cfg["tool"]["pytest"]["ini_options"]


def test_results_are_read_from_mutmuts_files_for_the_module_only(tmp_path):
    meta = tmp_path / "mutants" / "metalib" / "checks.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {
        P + "1": 1, P + "2": 0, P + "3": 33, P + "4": 36, P + "5": None, P + "6": -7,
        "metalib.checks_extra.x_f__mutmut_1": 0}}))
    assert drv.read_results(tmp_path, "checks.py") == {
        P + "1": "killed", P + "2": "survived", P + "3": "no tests", P + "4": "timeout", P + "5": "not checked",
        P + "6": "suspicious"}
    assert drv.mutant_source("metalib.rl.rl2.xǁRL2ǁact__mutmut_3") == "metalib/rl/rl2.py"


def test_only_runs_the_matching_mutants_and_then_just_those_not_detected(tmp_path, monkeypatch):
    """``--only``: the first run names the patterns; a later run names the undetected matches only (mutmut
    reruns every mutant named), and none at all when every match is detected; the report keeps the matches."""
    G = "metalib.grading."
    meta = tmp_path / "mutants" / "metalib" / "grading" / "report.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {G + "report.x_md__mutmut_1": None, G + "report.x_md__mutmut_2": None,
             G + "judges.common.x_f__mutmut_1": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    calls = []

    def fake_mutmut(ws, *args):
        calls.append(args[3:])
        return drv.subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(drv, "prepare_workspace", lambda module, fresh: tmp_path)
    monkeypatch.setattr(drv, "mutmut", fake_mutmut)
    monkeypatch.setattr(drv, "mutant_diffs", lambda ws, names: {n: "" for n in names})
    only = [G + "report.*"]
    r = drv.run_module("grading/", only=only)
    assert calls == [tuple(only)] and r.module == f"grading/ ({G}report.*)"
    assert r.status == {G + "report.x_md__mutmut_1": "not checked", G + "report.x_md__mutmut_2": "not checked"}
    meta.write_text(json.dumps({"exit_code_by_key": {**codes, G + "report.x_md__mutmut_1": 1,
                                                     G + "report.x_md__mutmut_2": 0}}))
    drv.run_module("grading/", only=only)
    assert calls[-1] == (G + "report.x_md__mutmut_2",)
    meta.write_text(json.dumps({"exit_code_by_key": {**codes, G + "report.x_md__mutmut_1": 1,
                                                     G + "report.x_md__mutmut_2": 1}}))
    drv.run_module("grading/", only=only)
    assert len(calls) == 2  # everything matched is detected: mutmut is not run
    assert drv.selected(["a.b", "a.c", "b.b"], ["a.*", "*.b"]) == ["a.b", "a.c", "b.b"]
    assert drv.selected(["a.b"], None) == ["a.b"] and drv.selected(["a.b"], ["A.*"]) == []


def test_diffs_of_thousands_of_mutants_do_not_overflow_the_command_line(tmp_path, capsys):
    """grading/ leaves thousands of judges' mutants undetected: their names once went in one argument
    (OSError: Argument list too long). In an empty workspace every diff fails: {} and a message, no crash."""
    names = [f"metalib.grading.judges.supervised.x_make_probes__mutmut_{i}" for i in range(5000)]
    assert drv.mutant_diffs(tmp_path, names) == {}
    assert "could not read the mutants' diffs" in capsys.readouterr().out


def test_a_package_also_selects_its_per_part_mutant_test_files(tmp_path):
    """grading/ picks up tests/test_mutants_grading_*.py (one file per judge); a module does not glob, so
    maml.py does not pull in test_mutants_maml_gradient.py."""
    (tmp_path / "tests").mkdir()
    for name in ("test_mutants_grading.py", "test_mutants_grading_judges_maml.py", "test_mutants_maml_gradient.py"):
        (tmp_path / "tests" / name).write_text("")
    got = drv.tests_for("grading/", tmp_path)
    assert got[-2:] == ["tests/test_mutants_grading.py", "tests/test_mutants_grading_judges_maml.py"], got
    assert "tests/test_mutants_maml_gradient.py" not in drv.tests_for("maml.py", tmp_path)
