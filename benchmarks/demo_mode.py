"""Instructor demo mode: how long each notebook takes to reach its main plot.

Demo mode is quick mode (``METALIB_QUICK=1``) with the shipped checkpoints: nothing trains for
long, every experiment runs at a reduced size, every plot is drawn. This script executes each
master notebook in solutions/ (the student versions have stubs) in a fresh kernel, cell by cell,
and prints, per notebook, the seconds from kernel start to the end of its main plot cell
(named in ``MAIN_PLOT`` by a piece of its source) and to the end of the notebook, the CPU seconds
the kernel used up to the main plot (on a machine shared with other jobs the wall time grows with
the load, the CPU time hardly: with ``OMP_NUM_THREADS=1`` it is what the notebook needs alone on
one core), and, for every notebook over the target, the cells that took longest before its main
plot (what dominates).

Run: ``python benchmarks/demo_mode.py [--notebooks 00 06] [--out FILE]``.
Target (issues 9 and 21): every notebook reaches its main plot in under 30 s on a laptop CPU.
Every master notebook needs an entry in ``MAIN_PLOT`` (``tests/test_docs.py`` checks it).
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
import psutil  # installed with ipykernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metalib.assignments import masters  # noqa: E402
from metalib.grading.nbexec import SlicedNotebookClient  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import cpu_name, emit  # noqa: E402

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
SLOWEST = 3   # cells listed per notebook over the target


def main_plot_cell(nb, name: str) -> int:
    """Index of ``name``'s main plot cell: the first code cell holding its ``MAIN_PLOT`` marker."""
    marker = MAIN_PLOT.get(name)
    if marker is None:
        raise KeyError(f"{name}: no entry in MAIN_PLOT; add a piece of its main plot cell's source to benchmarks/demo_mode.py")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and marker in cell.source:
            return i
    raise ValueError(f"{name}: no code cell contains the MAIN_PLOT marker {marker!r}; update it in benchmarks/demo_mode.py")


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time (user + system) used so far by ``proc`` and its finished children."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def time_notebook(path: Path, timeout: int = 600) -> tuple[float, float, float, int, list[tuple[float, int, str]]]:
    """(seconds to the end of the main plot cell, seconds in all, kernel CPU seconds to the end of the
    main plot cell, index of that cell, [(seconds, index, first source line)] of every code cell up to
    the main plot, slowest first)."""
    nb = nbformat.read(path, as_version=4)
    main_index = main_plot_cell(nb, path.stem)
    client = SlicedNotebookClient(nb, timeout=timeout, startup_timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    main_at, main_cpu, cells = None, None, []
    with client.setup_kernel():
        kernel = psutil.Process(client.km.provisioner.process.pid)
        cells.append((time.perf_counter() - start, -1, "(kernel start)"))
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, i)
            if main_at is None:
                first = next((l.strip() for l in cell.source.splitlines() if l.strip()), "")
                cells.append((time.perf_counter() - t0, i, first))
            if i == main_index:
                main_at, main_cpu = time.perf_counter() - start, cpu_seconds(kernel)
    return main_at, time.perf_counter() - start, main_cpu, main_index, sorted(cells, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notebooks", nargs="*", default=None, help="prefixes, e.g. 00 06 (default: all)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--cell-timeout", type=int, default=600, help="seconds a cell, or the kernel's start, may take (raise it on a loaded machine)")
    args = ap.parse_args()
    os.environ["METALIB_QUICK"] = "1"
    os.environ.setdefault("METALIB_CACHE", str(ROOT / ".cache"))
    shared = ROOT.parent / "shared" / "data"
    if "METALIB_DATA" not in os.environ and (shared / "omniglot").is_dir():
        os.environ["METALIB_DATA"] = str(shared)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} CPU cores, python {platform.python_version()}, "
             f"load average at start {load:.2f}; {datetime.date.today()}", "",
             "| notebook | main plot cell | to main plot (s) | kernel CPU to main plot (s) | whole notebook (s) | under 30 s |",
             "|---|---|---:|---:|---:|---|"]
    worst, slow = 0.0, []
    for path in masters(args.notebooks):
        main_at, total, cpu, index, cells = time_notebook(path, args.cell_timeout)
        worst = max(worst, main_at)
        lines.append(f"| {path.stem} | cell {index} | {main_at:.1f} | {cpu:.1f} | {total:.1f} | "
                     f"{'yes' if main_at < TARGET_S else 'NO'} |")
        slowest = f"* {path.stem}: " + "; ".join(
            f"{'kernel start' if i < 0 else f'cell {i}'} {t:.1f} s" + (f" (`{src[:60]}`)" if i >= 0 else "")
            for t, i, src in cells[:SLOWEST])
        print(lines[-1], "\n  slowest cells before the main plot:", slowest, flush=True)
        if main_at >= TARGET_S:
            slow.append(slowest)
    if slow:
        lines += ["", f"Slowest cells before the main plot, in notebooks over {TARGET_S:.0f} s:", "", *slow]
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    lines += ["", f"Command: {threads}python benchmarks/demo_mode.py " + " ".join(sys.argv[1:])]
    emit("\n".join(lines), args.out)
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
