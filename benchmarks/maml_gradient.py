"""Problem 1 (notebook 06): agreement of the four g_MAML computations, and their cost vs k.

Prints two markdown tables:
1. method x k -> largest relative error against the other exact computations (float64; a
   quadratic with its closed form, a tanh MLP regression task, and the MLP with a new mini-batch
   at every inner step), with the tolerance the tests enforce;
2. per method and k: milliseconds per meta-gradient (best of --repeats) and peak extra memory
   (metalib.profiling.MemoryTracker) on a tanh MLP 1-40-40-1 (n = 1761) with 100 support points,
   and each method's time as a multiple of autograd's in the same run.

Run: ``python benchmarks/maml_gradient.py [--ks 1 2 4 8 16] [--repeats 5] [--out FILE]``
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

from metalib import problem1 as p1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="inner steps for the cost table")
    ap.add_argument("--hessian-max-k", type=int, default=4, help="largest k timed with explicit Hessians")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats (best of)")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    start = time.perf_counter()
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), float64, CPU; {datetime.date.today()}", ""]

    rows = p1.agreement(ks=(1, 2, 5))
    lines += ["Largest relative error against the other exact computations (3 problems):", "",
              p1.agreement_table(rows), ""]
    bad = [r for r in rows if r["rel_error"] > p1.TOLERANCES[r["method"]]]

    prob = p1.regression_problem(hidden=(40, 40), k_support=100, alpha=0.01, seed=0)
    costs = p1.cost_vs_k(prob, args.ks, repeats=args.repeats, hessian_max_k=args.hessian_max_k)
    lines += [f"Cost per meta-gradient, tanh MLP n={prob.theta0.numel()}, 100 support / 10 query points:", "",
              "| method | k | ms | x autograd | peak extra MiB | largest tensor |", "|---|---|---|---|---|---|"]
    for r in costs:
        ref = next(c for c in costs if c["k"] == r["k"] and c["method"] == "autograd (unrolled)")
        lines.append(f"| {r['method']} | {r['k']} | {r['seconds'] * 1e3:.1f} | {r['seconds'] / ref['seconds']:.2f} "
                     f"| {r['peak_mib']:.3f} | {r['largest_tensor']:,} |")
    lines += ["", f"Total wall time {time.perf_counter() - start:.0f} s. Command: python benchmarks/maml_gradient.py "
              + " ".join(sys.argv[1:])]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if bad:
        print(f"DISAGREEMENT beyond tolerance: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
