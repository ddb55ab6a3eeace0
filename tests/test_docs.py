"""The documents: a short README, and docs/RESULTS.md rebuilt from the benchmarks' parts by `make bench`.

* README.md stays a two-minute read (≤ 1,500 words), holds no results (they live in docs/RESULTS.md)
  and every file it links to exists;
* `benchmarks/results_doc.py` puts each part in its block and refuses a part without a block, a block
  without a part and a block never closed; docs/RESULTS.md is up to date with docs/results/;
* every benchmark that `make bench` runs accepts ``--out`` and writes a part that docs/RESULTS.md shows;
* `benchmarks/demo_mode.py` knows the main plot cell of every master notebook.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import results_doc  # noqa: E402

README_MAX_WORDS = 1500


def test_readme_is_short_links_resolve_and_holds_no_results():
    text = (ROOT / "README.md").read_text()
    words = len(text.split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words (at most {README_MAX_WORDS}): move detail to docs/"
    links = re.findall(r"\]\(([^)#\s]+)", text)
    assert "docs/RESULTS.md" in links and "data/checkpoints/README.md" in links, links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    results = [line for line in text.splitlines() if "±" in line or line.startswith("Machine:")]
    assert not results, f"results belong in docs/RESULTS.md, not README.md: {results[:3]}"


DOC = """# R
intro
<!-- begin results/a.md -->
old a
<!-- end results/a.md -->
prose `<!-- begin results/quoted.md -->` stays text
<!-- begin results/b.md -->
<!-- end results/b.md -->
end
"""


def test_assemble_puts_each_part_in_its_block():
    parts = {"a.md": "| x |\n|---|\n| 1 |\n", "b.md": "Machine: m\n\n| y |\n"}
    out = results_doc.assemble(DOC, parts)
    assert "old a" not in out
    assert "<!-- begin results/a.md -->\n| x |\n|---|\n| 1 |\n<!-- end results/a.md -->" in out
    assert "<!-- begin results/b.md -->\nMachine: m\n\n| y |\n<!-- end results/b.md -->" in out
    assert out.startswith("# R\nintro\n") and "prose `<!-- begin results/quoted.md -->` stays text\n" in out
    assert out.endswith("end\n")
    assert results_doc.assemble(out, parts) == out  # idempotent


def test_assemble_refuses_missing_extra_and_unclosed():
    parts = {"a.md": "A\n", "b.md": "B\n"}
    with pytest.raises(KeyError, match="b.md"):
        results_doc.assemble(DOC, {"a.md": "A\n"})
    with pytest.raises(ValueError, match="c.md"):
        results_doc.assemble(DOC, {**parts, "c.md": "C\n"})
    with pytest.raises(ValueError, match="complete blocks"):  # b's block never closed (and b has no part)
        results_doc.assemble(DOC.replace("<!-- end results/b.md -->\n", ""), {"a.md": "A\n"})


def test_results_doc_is_up_to_date_with_its_parts():
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    parts = results_doc.read_parts(ROOT / "docs" / "results")
    assert results_doc.assemble(doc, parts) == doc, "docs/RESULTS.md is stale: run python benchmarks/results_doc.py"


def _accepts_out(script: Path) -> bool:
    """Whether the script's argparse has an ``--out`` option (read from its source, nothing run)."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and any(isinstance(a, ast.Constant) and a.value == "--out" for a in node.args)):
            return True
    return False


def test_make_bench_writes_every_part_then_assembles():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe, "Makefile has no bench target"
    lines = recipe.group(1).splitlines()
    runs = [line for line in lines if re.search(r"benchmarks/\w+\.py", line) and "results_doc.py" not in line]
    assert len(runs) >= 5, lines
    parts = results_doc.read_parts(ROOT / "docs" / "results")
    for line in runs:
        script = ROOT / re.search(r"(benchmarks/\w+\.py)", line).group(1)
        assert _accepts_out(script), f"{script.name} has no --out option"
        out = re.search(r"--out docs/results/([\w.-]+\.md)", line)
        assert out, f"`make bench` must pass --out docs/results/NAME.md: {line.strip()}"
        assert out.group(1) in parts, f"docs/results/{out.group(1)} missing (its block in docs/RESULTS.md needs it)"
    assert "benchmarks/results_doc.py" in lines[-1], "`make bench` must end by assembling docs/RESULTS.md"


def test_demo_mode_knows_every_notebooks_main_plot():
    import demo_mode

    from metalib.assignments import masters

    for path in masters(None):
        index = demo_mode.main_plot_cell(nbformat.read(path, as_version=4), path.stem)
        assert index >= 0
