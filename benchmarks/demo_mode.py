"""Instructor demo mode: how long each notebook takes to reach its main plot.

Demo mode is quick mode (``METALIB_QUICK=1``) with the shipped checkpoints: nothing trains for
long, every experiment runs at a reduced size, every plot is drawn. This script executes each
master notebook in solutions/ (the student versions have stubs) in a fresh kernel, cell by cell,
and prints, per notebook, the seconds from kernel start to the end of its main plot cell
(named below by a piece of its source) and to the end of the notebook.

Run: ``python benchmarks/demo_mode.py [--notebooks 00 06] [--out FILE]``.
Target (issue 9): every notebook reaches its main plot in under 30 s on a laptop CPU.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metalib.assignments import masters  # noqa: E402

# notebook -> a piece of the source of its main plot cell
MAIN_PLOT = {
    "00_welcome": "widgets.interact(show_softmax",
    "01_supervised_meta_learning": "viz.plot_accuracies(results",
    "02_black_box": "class EvalConfig:",
    "03_matching_networks": "viz.plot_accuracies(test_results",
    "04_prototypical_networks": "by_way = {n: accuracy(",
    "05_maml": "Fig. 2 of the MAML paper",
    "06_maml_gradient": "p1.first_order_errors(",
    "07_meta_rl_rl2": "class GridEval:",
    "08_maml_rl": "class AdaptEval:",
    "09_choosing_a_meta_learner": "trained with 1 shot, tested with 1 and with 5",
}
TARGET_S = 30.0


def time_notebook(path: Path, marker: str | None, timeout: int = 600) -> tuple[float | None, float, int | None]:
    """(seconds to the end of the main plot cell, seconds in all, index of that cell)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    main_at, main_index = None, None
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, i)
            if marker and main_at is None and marker in cell.source:
                main_at, main_index = time.perf_counter() - start, i
    return main_at, time.perf_counter() - start, main_index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notebooks", nargs="*", default=None, help="prefixes, e.g. 00 06 (default: all)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    os.environ["METALIB_QUICK"] = "1"
    os.environ.setdefault("METALIB_CACHE", str(ROOT / ".cache"))
    shared = ROOT.parent / "shared" / "data"
    if "METALIB_DATA" not in os.environ and (shared / "omniglot").is_dir():
        os.environ["METALIB_DATA"] = str(shared)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, "
             f"load average at start {load:.2f}; {datetime.date.today()}", "",
             "| notebook | main plot cell | to main plot (s) | whole notebook (s) | under 30 s |", "|---|---|---|---|---|"]
    worst = 0.0
    for path in masters(args.notebooks):
        marker = MAIN_PLOT.get(path.stem)
        main_at, total, index = time_notebook(path, marker)
        shown = main_at if main_at is not None else total
        worst = max(worst, shown)
        cell = f"cell {index}" if index is not None else "(no marker: whole notebook)"
        lines.append(f"| {path.stem} | {cell} | {shown:.1f} | {total:.1f} | {'yes' if shown < TARGET_S else 'NO'} |")
        print(lines[-1], flush=True)
    lines += ["", "Command: python benchmarks/demo_mode.py " + " ".join(sys.argv[1:])]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
