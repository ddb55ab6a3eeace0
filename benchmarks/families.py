"""Notebook 09's tables: every family on the Vinyals split with one Conv-4 and one wall-clock budget.

Trains each of `metalib.families.FAMILIES` for ``--budget`` seconds (default 240 s = 4 minutes per
method: seven budgets of training, 28 minutes, plus the tests, fit a session on a 2-core CPU; the issue
suggested 15 minutes per method: pass ``--budget 900``), tests it on 5-way and 20-way, 1- and 5-shot tasks of
the Vinyals test classes (``--episodes`` 600, mean ± 95% CI, ``--queries`` 5 per class) and on 5- and
10-way 1-shot tasks of scikit-learn's digits (the domain shift), and runs the memorisation experiment
(`metalib.memorization`). Writes the markdown tables (``--out``) and the results file notebook 09 loads
(``--results``, default ``data/results/families_vinyals.json``).

Run:  OMP_NUM_THREADS=1 python benchmarks/families.py --out /work/logs/families.md
Quick check (seconds, nothing meaningful): METALIB_QUICK=1 python benchmarks/families.py --results /tmp/f.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import metalib  # noqa: E402
from metalib.families import FAMILIES, RESULTS, FamiliesConfig, compact_history, markdown_tables, run_family  # noqa: E402
from _report import emit, machine  # noqa: E402

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=FamiliesConfig.budget_s,
                    help="training seconds per method (default 240; the issue suggested 900)")
    ap.add_argument("--episodes", type=int, default=FamiliesConfig.episodes)
    ap.add_argument("--queries", type=int, default=FamiliesConfig.queries)
    ap.add_argument("--methods", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--no-memorization", action="store_true", help="skip the memorisation experiment")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON notebook 09 loads")
    ap.add_argument("--out", default=None, help="also write the markdown tables to this file")
    args = ap.parse_args()

    fc = metalib.maybe_quick(FamiliesConfig(budget_s=args.budget, episodes=args.episodes, queries=args.queries))
    device = metalib.get_device()
    data = metalib.load_omniglot()
    results = {"command": "python benchmarks/families.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               "machine": machine(), "load_at_start": os.getloadavg()[0], "date": str(datetime.date.today()),
               "quick": metalib.is_quick(), "config": vars(fc) if not hasattr(fc, "__dataclass_fields__")
               else {k: getattr(fc, k) for k in fc.__dataclass_fields__},
               "settings": [list(s) for s in metalib.families.SETTINGS],
               "digit_settings": [list(s) for s in metalib.families.DIGIT_SETTINGS], "methods": {}}
    start = time.perf_counter()
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        results["wall_seconds"] = time.perf_counter() - start
        out.write_text(json.dumps(results, indent=1) + "\n")

    for name in args.methods:
        results["methods"][name] = run_family(name, fc, data=data, device=device, log=lambda s: print(s, flush=True))
        save()  # after every method: an interrupted run keeps what it measured
    if not args.no_memorization:
        from metalib.memorization import MemorizationConfig, run_memorization
        mcfg = metalib.maybe_quick(MemorizationConfig())
        mem = run_memorization(mcfg, data=data, device=device)
        for r in mem.values():
            r["history"] = compact_history(r["history"])
        results["memorization"] = {"config": {**vars(mcfg), "train": vars(mcfg.train)}, **mem}
        print(f"memorisation: {mem['fixed']['seconds'] + mem['shuffled']['seconds']:.0f} s", flush=True)
    save()
    emit(markdown_tables(results), args.out)
    print(f"results in {out} ({results['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
