"""RL² on GridNavi under three hidden-state reset rules (notebook 07, Problem 2).

Trains (``--retrain``) the GridNavi agent with ``reset="task"`` and saves
``data/checkpoints/rl2_gridnavi.pt``; then plays pairs of back-to-back tasks (4 episodes each) with
the same network under reset="task", "episode" and "never", and prints the mean return of each of
the 8 episodes next to the exact expectation of a scripted nearest-unvisited-cell searcher with the
same memory rule (`metalib.rl.searcher`).

Run: ``python benchmarks/rl2_gridnavi.py [--retrain] [--tasks 10000] [--out FILE]``
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from metalib import TrainConfig
from metalib.checkpoint import checkpoint_dir
from metalib.rl.envs import GridNavi
from metalib.rl.policy_io import load_policy, save_policy
from metalib.rl.rl2 import RL2Config, evaluate_rl2, train_rl2
from metalib.rl.searcher import expected_returns
from _report import emit  # benchmarks/_report.py (scripts run from this folder)

CHECKPOINT = "rl2_gridnavi.pt"
CONFIG = RL2Config(hidden=64, gamma=0.99, gae_lambda=0.95, entropy_start=0.05, entropy_end=0.005,
                   train=TrainConfig(steps=1500, meta_batch=512, lr=1e-2, eval_every=0, grad_clip=1.0))


def retrain(command: str) -> None:
    env = GridNavi()
    load0, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    policy, hist = train_rl2(env, CONFIG, progress=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    r = evaluate_rl2(policy, env, 2000, seed=999).view(2000, env.n_episodes, env.episode_len).sum(2).mean(0)
    save_policy(checkpoint_dir() / CHECKPOINT, policy, env, config=CONFIG, command=command, train_seconds=wall,
                train_cpu_seconds=cpu, device="cpu", threads=torch.get_num_threads(), load_avg_at_start=load0,
                check_episode_returns=r.tolist(), train_returns=[round(h["return"], 3) for h in hist.train])
    print(f"trained: {wall:.0f} s wall, {cpu:.0f} s CPU; episode returns {[round(v, 2) for v in r.tolist()]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrain", action="store_true", help="train the agent again (overwrites the checkpoint)")
    ap.add_argument("--tasks", type=int, default=10_000, help="pairs of fresh tasks per reset rule")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.retrain:
        retrain("python benchmarks/rl2_gridnavi.py --retrain")
    policy, env, meta = load_policy(CHECKPOINT)
    lines = ["| reset rule | who | " + " | ".join(f"T{t} ep{e}" for t in (1, 2) for e in range(1, 5)) + " |",
             "|---|---|" + "---:|" * 8]
    for rule in ("task", "episode", "never"):
        r = evaluate_rl2(policy, env, args.tasks, reset=rule, seed=7, n_trials=2)
        ep = r.view(args.tasks, 8, env.episode_len).sum(-1)  # (tasks, 8 episodes)
        m, se = ep.mean(0), ep.std(0) / args.tasks ** 0.5
        lines.append(f"| {rule} | RL² | " + " | ".join(f"{a:.2f} ± {b:.2f}" for a, b in zip(m.tolist(), se.tolist())) + " |")
        lines.append(f"| {rule} | searcher (exact) | " + " | ".join(f"{v:.2f}" for v in expected_returns(env, rule, 2).tolist()) + " |")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    head = (f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} torch thread(s), device cpu, "
            f"python {platform.python_version()}, load average now {os.getloadavg()[0]:.1f}. Agent: `{meta['command']}` "
            f"({meta['train_seconds']:.0f} s wall, {meta['train_cpu_seconds']:.0f} s CPU, load average at start "
            f"{meta['load_avg_at_start']:.1f}). {args.tasks:,} pairs of fresh tasks per rule; mean ± s.e. of each episode's return.")
    text = head + "\n\n" + "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
