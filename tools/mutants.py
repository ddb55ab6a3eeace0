"""Mutation testing of metalib's core modules (issue 25): `make mutants [MODULES="checks.py maml.py"]`.

Runs mutmut 3 (https://mutmut.readthedocs.io, the ``mutation`` extra) once per core module, each
against only the fast tests relevant to it (``TARGETS``; ``tests/test_mutants_<name>.py`` are
added automatically). Inside that selection mutmut runs, for each mutant, only the tests that
call the mutated function. Every module gets its own workspace ``.mutants/<name>/`` (ignored by
git) holding a generated mutmut/pytest configuration and mutmut's cache: a second run retests
only changed functions, plus every mutant that was not killed last time (so a new test counts).
``--fresh`` starts a module from scratch.

The report is a markdown table (module, mutants, killed, survived, no tests, timeout,
equivalent, score) and the list of undetected mutants with their diffs, printed and written to
``.mutants/report.md``. Mutants judged equivalent (no test can tell them from the original)
are listed with the reason in ``docs/mutants_equivalent.yml``; they leave the score's
denominator and are shown separately. An entry names the mutant and the mutated line; when the
code changes so that the line no longer matches, the entry is reported stale and not excluded.

score = (killed + timeout) / (mutants - equivalent); "no tests" (no selected test calls the
function) and "other" (suspicious, segfault, not checked) count as undetected.

``--only PATTERN`` (repeatable) restricts a run and its score to the mutants whose names match the
fnmatch pattern, e.g. ``grading/ --only 'metalib.grading.report.*'``: for a package too large to test
whole in one sitting (``grading/`` has ~10,000 mutants, most in the per-notebook ``judges/``); the
report's row names the patterns.

Run: ``OMP_NUM_THREADS=1 nice -n 19 python tools/mutants.py [MODULE ...] [--fresh] [--list] [--only PATTERN]``
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutants"
EQUIVALENT_FILE = ROOT / "docs" / "mutants_equivalent.yml"

# module (relative to metalib/; a folder ends with "/") -> the fast test files that exercise it.
TARGETS: dict[str, list[str]] = {
    "checks.py": ["tests/test_checks.py"],
    "protonet.py": ["tests/test_metric.py"],
    "matching.py": ["tests/test_metric.py"],
    "maml.py": ["tests/test_maml.py", "tests/test_maml_gradient.py"],
    "maml_train.py": ["tests/test_maml.py"],
    "maml_gradient.py": ["tests/test_maml_gradient.py"],
    "metric_train.py": ["tests/test_metric.py"],
    "blackbox_train.py": ["tests/test_blackbox.py"],
    "rl/rl2.py": ["tests/test_rl2.py"],
    "rl/baselines.py": ["tests/test_rl_baselines.py"],
    "rl/maml_rl.py": ["tests/test_maml_rl.py"],
    # grading/: the in-process tests only (see DESELECT); tests/test_mutants_grading.py calls the modules directly
    "grading/": ["tests/test_grading.py", "tests/test_grading_sandbox.py", "tests/test_judges.py", "tests/test_guard.py",
                 "tests/test_pyast.py", "tests/test_gradescope.py", "tests/test_nbexec.py"],
}
# Tests left out of a module's mutation run: learning tests that take minutes per mutant at nice 19 on
# 2 cores (the module's fast tests in tests/test_mutants_<name>.py stand in for them; CI still runs them).
DESELECT: dict[str, list[str]] = {
    "rl/rl2.py": ["tests/test_rl2.py::test_a2c_learns_a_dependent_bandit"],
    # grading: tests that grade whole folders of notebooks in sandboxed kernels (13 s to 150 s each, measured
    # with --durations; several share a module fixture that grades a corpus for ~140 s)
    "grading/": [*(f"tests/test_grading.py::{t}" for t in (
                     "test_corpus_has_every_kind_of_broken_submission", "test_each_broken_submission_scores_as_expected",
                     "test_careless_but_honest_submissions_get_full_marks",
                     "test_grading_leaves_the_submissions_untouched_and_writes_reports",
                     "test_reference_implementation_is_flagged_and_scored_zero",
                     "test_autograder_zip_full_marks_for_solutions_zero_for_blank",
                     "test_every_single_test_fails_on_the_blank_00")),
                 *(f"tests/test_grading_sandbox.py::{t}" for t in (
                     "test_each_attack_is_graded_as_an_honest_grader_would", "test_every_single_test_fails_on_the_blank_06",
                     "test_nothing_outside_the_output_folder_changes", "test_grading_without_sandbox_says_it_is_not_isolated",
                     "test_every_single_test_fails_on_the_blank_notebook",
                     "test_honest_full_marks_and_patched_checks_nothing")),
                 "tests/test_judges.py::test_honest_blank_and_tampered_submissions",
                 "tests/test_gradescope.py::test_gradescope_zip_installs_itself_and_grades_full_marks_and_zero"],
}
# Project folders besides metalib/ and tests/ that a module's tests read through metalib's own paths
# (metalib.assignments.SOLUTIONS = <package>/../solutions): copied beside the mutated package.
PROJECT_FOLDERS: dict[str, list[str]] = {
    "grading/": ["solutions", "notebooks"],
}
DETECTED = ("killed", "timeout")
TIMEOUT_CONSTANT_S, TIMEOUT_MULTIPLIER = 20.0, 10.0
COLUMNS = ("killed", "survived", "no tests", "timeout")


def slug(module: str) -> str:
    """``rl/rl2.py`` -> ``rl_rl2``, ``grading/`` -> ``grading``: the workspace and test-file name."""
    return module.removesuffix("/").removesuffix(".py").replace("/", "_")


def tests_for(module: str, root: Path = ROOT) -> list[str]:
    """The module's test files, plus ``tests/test_mutants_<slug>.py`` when it exists, and for a package
    (``grading/``) also ``tests/test_mutants_<slug>_*.py`` (one file per part, e.g.
    ``tests/test_mutants_grading_judges_maml.py``)."""
    tests = list(TARGETS[module])
    extras = [f"tests/test_mutants_{slug(module)}.py"]
    if module.endswith("/"):
        extras += sorted(p.relative_to(root).as_posix() for p in root.glob(f"tests/test_mutants_{slug(module)}_*.py"))
    for extra in extras:
        if (root / extra).exists() and extra not in tests:
            tests.append(extra)
    return tests


def mutate_pattern(module: str) -> str:
    return f"metalib/{module}*" if module.endswith("/") else f"metalib/{module}"


def module_prefix(module: str) -> str:
    """The mutant-name prefix of a module: ``metalib.rl.rl2.`` (mutmut names mutants by dotted path)."""
    return "metalib." + module.removesuffix("/").removesuffix(".py").replace("/", ".") + "."


# ---------------------------------------------------------------- workspace and mutmut runs

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def workspace_config(module: str, root: Path = ROOT) -> str:
    """pyproject.toml of a module's workspace: mutmut's settings and the project's pytest settings."""
    pytest_opts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    mutmut = {
        "source_paths": ["metalib"],
        "only_mutate": [mutate_pattern(module)],
        "also_copy": ["conftest.py", *PROJECT_FOLDERS.get(module, [])],
        "pytest_add_cli_args_test_selection": tests_for(module, root),
        "pytest_add_cli_args": ["-m", "not slow", "-p", "no:cacheprovider",
                                *(f"--deselect={test}" for test in DESELECT.get(module, []))],
        "use_git_change_detection": False,
        # mutmut's wall-clock limit per mutant is (test time + constant) * multiplier; its defaults
        # (1 s, x15) turn every mutant into a "timeout" on a loaded 2-core machine at nice 19.
        "timeout_constant": TIMEOUT_CONSTANT_S,
        "timeout_multiplier": TIMEOUT_MULTIPLIER,
    }
    lines = ["# generated by tools/mutants.py: do not edit", "[tool.mutmut]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in mutmut.items()]
    lines += ["", "[tool.pytest.ini_options]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in pytest_opts.items() if k != "testpaths"]
    return "\n".join(lines) + "\n"


def prepare_workspace(module: str, fresh: bool) -> Path:
    ws = WORK / slug(module)
    if fresh and ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True, exist_ok=True)
    for name in ("metalib", "tests", "conftest.py", *PROJECT_FOLDERS.get(module, [])):
        link = ws / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    (ws / "pyproject.toml").write_text(workspace_config(module))
    # mutmut copies the unmutated files only once: drop copies whose source changed since.
    copied = ws / "mutants" / "metalib"
    if copied.is_dir():
        for path in copied.rglob("*"):
            rel = path.relative_to(copied)
            src = ROOT / "metalib" / rel
            if path.is_file() and not path.name.endswith(".meta") and not _is_target(module, rel) \
                    and (not src.is_file() or src.read_bytes() != path.read_bytes()):
                path.unlink()
    return ws


def _is_target(module: str, rel: Path) -> bool:
    rel = rel.as_posix()
    return rel.startswith(module) if module.endswith("/") else rel == module


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the tests must import the mutated copy, not the worktree
    env.setdefault("OMP_NUM_THREADS", "1")
    shared = ROOT.parent / "shared" / "data"
    if "METALIB_DATA" not in env and (shared / "omniglot").is_dir():
        env["METALIB_DATA"] = str(shared)  # what conftest.py does, from the real project root
    env.setdefault("METALIB_CACHE", str(ROOT / ".cache"))
    # the mutated copy lives in .mutants/<name>/mutants/metalib, where checkpoint_dir() finds no data/ folder
    env.setdefault("METALIB_CHECKPOINTS", str(ROOT / "data" / "checkpoints"))
    return env


def mutmut(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ws, env=_env(), check=False)


# mutmut 3.8's exit codes (mutmut.stats.status_by_exit_code), copied so that the report needs no mutmut.
STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
                       36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
                       None: "not checked", 37: "caught by type check", -11: "segfault", -9: "segfault"}


def read_results(ws: Path, module: str) -> dict[str, str]:
    """mutant name -> status, for the module's mutants, from mutmut's result files (``*.py.meta``)."""
    found = {}
    for meta in sorted((ws / "mutants" / "metalib").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            found[name] = STATUS_BY_EXIT_CODE.get(code, "suspicious")
    return {k: v for k, v in found.items() if k.startswith(module_prefix(module))}


_DIFFS = """
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {n: get_diff_for_mutant(n, path=Path(p)) for n, p in json.loads(sys.stdin.read()).items()}
print(json.dumps(out))
"""


def mutant_source(name: str) -> str:
    """``metalib.rl.rl2.xǁRL2ǁact__mutmut_3`` -> ``metalib/rl/rl2.py``."""
    return name.rsplit(".", 1)[0].replace(".", "/") + ".py"


def mutant_diffs(ws: Path, names: list[str]) -> dict[str, str]:
    """name -> the mutant's changed lines (``-`` original, ``+`` mutant), in one mutmut call."""
    if not names:
        return {}
    # the names go through stdin: thousands of them (grading/) overflow a command-line argument
    proc = subprocess.run([sys.executable, "-c", _DIFFS], input=json.dumps({n: mutant_source(n) for n in names}),
                          cwd=ws, env=_env(), text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        print(f"could not read the mutants' diffs: {proc.stderr.strip()[-500:]}")
        return {}
    return {n: "\n".join(l for l in d.splitlines() if l.startswith(("-", "+")) and not l.startswith(("---", "+++")))
            for n, d in json.loads(proc.stdout).items()}


def selected(names, only: list[str] | None):
    """The mutant names that match one of the fnmatch patterns ``only`` (all of them when None)."""
    return [n for n in names if only is None or any(fnmatch.fnmatchcase(n, pat) for pat in only)]


def run_module(module: str, fresh: bool = False, only: list[str] | None = None) -> "ModuleResult":
    """Mutation-test ``module``; ``only`` (fnmatch patterns of mutant names, e.g. ``metalib.grading.report.*``)
    restricts the run and the result to part of a module too large to test whole."""
    start = time.time()
    ws = prepare_workspace(module, fresh)
    before = read_results(ws, module) if (ws / "mutants").is_dir() else {}
    before = {k: before[k] for k in selected(before, only)}
    if only is None:
        proc = mutmut(ws, "run", "--max-children", "1")
        retry = [k for k, v in before.items() if v not in DETECTED]
    else:  # mutmut reruns every mutant named on its command line: name only those not detected yet
        undetected = [k for k, v in before.items() if v not in DETECTED]
        fresh_run = all(v == "not checked" for v in before.values())
        proc = mutmut(ws, "run", "--max-children", "1", *(only if fresh_run else undetected)) \
            if fresh_run or undetected else subprocess.CompletedProcess([], 0)
        retry = []
    if proc.returncode != 0:
        raise SystemExit(f"mutmut failed on {module} (exit {proc.returncode}); see its output above, "
                         f"and run `cd {ws} && python -m mutmut run` to reproduce")
    if retry:  # cached verdicts stand in mutmut; retest what survived so that new tests count
        mutmut(ws, "run", "--max-children", "1", *retry)
    status = read_results(ws, module)
    status = {k: status[k] for k in selected(status, only)}
    diffs = mutant_diffs(ws, [k for k, v in status.items() if v not in DETECTED])
    label = module if only is None else f"{module} ({', '.join(only)})"
    return ModuleResult(label, status, diffs, time.time() - start)


# ---------------------------------------------------------------- scoring and the report

@dataclass
class ModuleResult:
    module: str
    status: dict[str, str]  # mutant -> killed / survived / no tests / timeout / ...
    diffs: dict[str, str] = field(default_factory=dict)  # undetected mutant -> its -/+ lines
    seconds: float = 0.0


def load_equivalent(path: Path = EQUIVALENT_FILE) -> dict[str, dict]:
    """mutant name -> {"line": the mutated line, "reason": why no test can kill it}."""
    if not path.exists():
        return {}
    entries = yaml.safe_load(path.read_text()) or []
    out = {}
    for e in entries:
        missing = {"mutant", "line", "reason"} - set(e)
        if missing:
            raise SystemExit(f"{path}: entry {e} lacks {sorted(missing)}")
        out[e["mutant"]] = {"line": e["line"], "reason": e["reason"]}
    return out


def classify(result: ModuleResult, equivalent: dict[str, dict]) -> dict:
    """Counts for the table, and the equivalent / stale / undetected mutants of one module."""
    counts = {c: 0 for c in COLUMNS} | {"other": 0}
    equiv, stale, undetected = {}, {}, {}
    for name, st in sorted(result.status.items()):
        entry = equivalent.get(name)
        if entry is not None and st not in DETECTED:
            plus = [l[1:].strip() for l in result.diffs.get(name, "").splitlines() if l.startswith("+")]
            if entry["line"].strip() in plus:
                equiv[name] = entry["reason"]
                continue
            stale[name] = entry
        counts[st if st in COLUMNS else "other"] += 1
        if st not in DETECTED:
            undetected[name] = st
    total = len(result.status)
    scored = total - len(equiv)
    detected = counts["killed"] + counts["timeout"]
    score = detected / scored if scored else float("nan")
    return {"total": total, "counts": counts, "equivalent": equiv, "stale": stale,
            "undetected": undetected, "score": score}


def render(results: list[ModuleResult], equivalent: dict[str, dict]) -> str:
    rows = ["| module | mutants | killed | survived | no tests | timeout | other | equivalent | score | time |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    details = []
    for r in results:
        c = classify(r, equivalent)
        n = c["counts"]
        rows.append(f"| `{r.module}` | {c['total']} | {n['killed']} | {n['survived']} | {n['no tests']} | "
                    f"{n['timeout']} | {n['other']} | {len(c['equivalent'])} | {c['score']:.1%} | {r.seconds:.0f} s |")
        for name, st in c["undetected"].items():
            stale = " (stale equivalent entry: the line no longer matches)" if name in c["stale"] else ""
            details.append(f"- `{name}`: {st}{stale}\n\n```diff\n{r.diffs.get(name, '').strip()}\n```")
        for name, reason in c["equivalent"].items():
            details.append(f"- `{name}`: equivalent: {reason}")
    text = "\n".join(rows)
    text += "\n\nscore = (killed + timeout) / (mutants - equivalent).\n"
    if details:
        text += "\n### Undetected and equivalent mutants\n\n" + "\n".join(details) + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules under metalib/ (default: all): {' '.join(TARGETS)}")
    ap.add_argument("--fresh", action="store_true", help="discard the modules' cached results first")
    ap.add_argument("--list", action="store_true", help="print each module's test files and exit")
    ap.add_argument("--only", action="append", metavar="PATTERN",
                    help="test and score only the mutants whose names match this fnmatch pattern (repeatable), "
                         "e.g. 'metalib.grading.report.*': a part of a module too large to test whole")
    ap.add_argument("--out", type=Path, default=WORK / "report.md", help="also write the report here")
    args = ap.parse_args(argv)
    modules = [m.removeprefix("metalib/") for m in args.modules] or list(TARGETS)
    unknown = [m for m in modules if m not in TARGETS]
    if unknown:
        ap.error(f"unknown module(s) {unknown}: choose from {' '.join(TARGETS)}")
    if args.list:
        for m in modules:
            print(f"{m}: {' '.join(tests_for(m))}")
        return 0
    equivalent = load_equivalent()
    results = []
    for m in modules:
        print(f"== mutation testing metalib/{m} against {' '.join(tests_for(m))}", flush=True)
        results.append(run_module(m, fresh=args.fresh, only=args.only))
    report = render(results, equivalent)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
