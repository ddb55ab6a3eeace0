"""Packaging: pyproject.toml and environment.yml declare the same packages; the two README commands exist."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert m, f"cannot parse requirement {spec!r}"
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(s) for s in specs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((PROJECT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            if name not in ("python", "pip"):
                out[CONDA_TO_PIP.get(name, name)] = spec
    return out


def test_environment_yml_matches_pyproject():
    pip, conda = pyproject_requirements(), conda_requirements()
    assert set(pip) == set(conda), f"only in pyproject: {set(pip) - set(conda)}; only in environment.yml: {set(conda) - set(pip)}"
    differing = {n: (pip[n], conda[n]) for n in pip if pip[n] != conda[n]}
    assert not differing, f"version specifiers differ (pyproject, environment.yml): {differing}"


def test_required_packages_are_declared():
    need = {"torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "tqdm", "otter-grader", "pytest", "nbval"}
    missing = need - set(pyproject_requirements())
    assert not missing, f"pyproject.toml lacks {missing}"
    assert pyproject_requirements()["torch"], "torch must be declared with a version range"


def test_readme_commands_and_ci_agree():
    readme = (PROJECT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme, "README must give the two commands"
    ci = (PROJECT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call the README's test command"
    makefile = (PROJECT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
