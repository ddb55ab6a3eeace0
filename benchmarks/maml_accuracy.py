"""MAML family accuracy: Omniglot 5-way 1-shot (MAML, FOMAML, ANIL, Reptile) and sinusoid regression.

Trains (``--retrain NAME ...``) or loads the shipped checkpoints ``data/checkpoints/<NAME>.pt`` (names in
`metalib.maml_train.EXPERIMENTS`), then measures on held-out tasks, the same tasks for every model:

* Omniglot (Vinyals split, rotations; 600 test episodes with 15 queries per class, mean ± 95% CI):
  query accuracy after 0, 1, 3 and 5 inner steps (α as in training);
* sinusoids (600 held-out tasks, 100 query points each): MSE after 0, 1 and 10 gradient steps with
  K = 5 and K = 10 support points, MAML against the network pre-trained jointly on all tasks (the
  MAML paper's Fig. 2 comparison; both adapt with the same α).

Run: ``python benchmarks/maml_accuracy.py [--retrain NAME ... | --models NAME ...] [--episodes 600] [--out FILE]``
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time


import metalib
from metalib.checkpoint import checkpoint_dir
from metalib.maml_train import EXPERIMENTS, MAMLConfig, evaluate_maml, load_maml, task_sampler, train_maml
from _report import emit, machine  # benchmarks/_report.py (scripts run from this folder)

OMNI_STEPS = (0, 1, 3, 5)
SINE_STEPS = (0, 1, 10)


def retrain(name: str, device, data, time_budget: float | None = None) -> None:
    cfg = metalib.maybe_quick(EXPERIMENTS[name])
    if time_budget is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget=time_budget))
    load = os.getloadavg()[0]
    path = checkpoint_dir() / f"{name}.pt"
    print(f"training {name} (load average {load:.2f}): {cfg}", flush=True)
    budget = f" --time-budget {time_budget:g}" if time_budget is not None else ""
    _, history = train_maml(cfg, device=device, data=data, progress=False, log=lambda s: print(s, flush=True),
                            checkpoint=path, command=f"python benchmarks/maml_accuracy.py --retrain {name}{budget}",
                            load_average_at_start=load, date=str(datetime.date.today()), machine=machine())
    print(f"trained {name}: {len(history.train)} of {cfg.train.steps} steps ({history.stopped}) in "
          f"{history.train[-1]['time'] if history.train else 0:.0f} s -> {path}", flush=True)


def fmt(score, pct: bool) -> str:
    """mean ± CI (regression: and the median; and the tasks whose adaptation diverged, if any)."""
    text = (f"{100 * score.mean:.1f} ± {100 * score.ci95:.1f}" if pct
            else f"{score.mean:.3f} ± {score.ci95:.3f} (median {score.median:.3f})")
    return text + (f"; {score.diverged} diverged" if score.diverged else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrain", nargs="*", default=None, help="train these experiments again (none named: all)")
    ap.add_argument("--models", nargs="+", default=None, metavar="NAME",
                    help="evaluate only these shipped checkpoints (default: every experiment, or those retrained)")
    ap.add_argument("--episodes", type=int, default=600, help="test tasks per model")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="stop each --retrain run after this much wall time (it is saved as usual)")
    args = ap.parse_args()
    device = metalib.get_device()
    print(f"Machine: {machine()}; device {device}; load average {os.getloadavg()[0]:.2f}.", flush=True)
    names = list(EXPERIMENTS)
    if args.retrain is not None:
        unknown = sorted(set(args.retrain) - set(names))
        if unknown:
            ap.error(f"unknown experiments {unknown}; choose from {names}")
        names = args.retrain or names
    if args.models is not None:
        unknown = sorted(set(args.models) - set(EXPERIMENTS))
        if unknown:
            ap.error(f"unknown experiments {unknown}; choose from {list(EXPERIMENTS)}")
        if args.retrain is not None:
            ap.error("--models chooses what to evaluate without training; --retrain evaluates what it trains")
        names = args.models
    needs_omniglot = any(EXPERIMENTS[n].dataset == "omniglot" for n in names)
    data = metalib.load_omniglot() if needs_omniglot else None
    for name in names if args.retrain is not None else []:
        retrain(name, device, data, args.time_budget)

    omni = ["| model | test | training | train wall | " + " | ".join(f"{s} steps" for s in OMNI_STEPS) + " |",
            "|---" * (4 + len(OMNI_STEPS)) + "|"]
    sine = ["| model | training | train wall | K | " + " | ".join(f"MSE after {s}" for s in SINE_STEPS) + " |",
            "|---" * (4 + len(SINE_STEPS)) + "|"]
    for name in names:
        path = checkpoint_dir() / f"{name}.pt"
        if not path.is_file():
            print(f"skip {name}: no checkpoint {path} (train it with --retrain {name})", flush=True)
            continue
        learner, meta = load_maml(path, device)
        cfg = MAMLConfig.from_dict(meta["config"])
        hist = meta.get("history", {})
        done = f"{len(hist.get('train', []))} steps of {cfg.train.meta_batch} tasks ({hist.get('stopped', '?')})"
        wall = f"{meta.get('train_seconds', float('nan')) / 60:.1f} min on {meta.get('device', '?')}"
        t0 = time.perf_counter()
        if cfg.dataset == "omniglot":
            test_cfg = dataclasses.replace(cfg, n_query=15)
            res = evaluate_maml(learner, task_sampler(test_cfg, "test", device=device, data=data, seed=0),
                                steps=OMNI_STEPS, episodes=args.episodes)
            omni.append(f"| {name} | {cfg.n_way}-way {cfg.k_shot}-shot | {cfg.method}, α {cfg.inner_lr}, {cfg.inner_steps} "
                        f"inner step(s); {done} | {wall} | "
                        + " | ".join(fmt(res[s], True) for s in OMNI_STEPS) + " |")
        else:
            for k in (5, 10):
                test_cfg = dataclasses.replace(cfg, k_shot=k, n_query=100)
                res = evaluate_maml(learner, task_sampler(test_cfg, "test", device=device, seed=0),
                                    steps=SINE_STEPS, episodes=args.episodes, batch_size=100)
                sine.append(f"| {name} | {cfg.method}, α {cfg.inner_lr}; {done} | {wall} | {k} | "
                            + " | ".join(fmt(res[s], False) for s in SINE_STEPS) + " |")
        print(f"{name}: evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    text = "\n".join([f"Machine: {machine()}; device {device}; {datetime.date.today()}.", "",
                      f"Omniglot N-way 1-shot, {args.episodes} test episodes (15 queries per class), query accuracy "
                      "(%, mean ± 95% CI) after n inner steps:", "", *omni, "",
                      f"Sinusoid regression, {args.episodes} held-out tasks with 100 query points, MSE (mean ± 95% CI) "
                      "after n gradient steps on K support points:", "", *sine, "",
                      "Regression cells: mean ± 95% CI over the tasks whose adaptation stayed finite, the median, and "
                      "the number of tasks (of the total) where it diverged to inf/NaN.", "",
                      "Command: python benchmarks/maml_accuracy.py " + " ".join(sys.argv[1:])])
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
