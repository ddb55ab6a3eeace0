"""MAML for RL on 2-D navigation (notebook 08): return after 0-3 policy-gradient steps on held-out goals.

Compares three initialisations, each adapted on every held-out goal by the same procedure (sample
K trajectories, one policy-gradient step with the linear baseline, repeat; `evaluate_adaptation`):

* MAML (``data/checkpoints/maml_rl_nav2d.pt``, Algorithm 3 with one second-order inner step);
* pre-trained: the same policy and the same loop with no inner step, i.e. one policy trained on all
  goals jointly (``data/checkpoints/maml_rl_pretrained_nav2d.pt``), then fine-tuned;
* random initialisation (the MAML policy's initial weights), fine-tuned.

The baselines are fine-tuned with MAML's step size α and, in a second row each, with the α from
``LR_GRID`` that gives them the best return after 1, 2 and 3 steps on 100 separate validation goals
(a different α per column: the strongest version of each baseline).
``--retrain`` trains both checkpoints again (wall time, CPU time and load average are recorded);
``--ablation`` trains short variants of the recipe and prints what each change does.

Run: ``python benchmarks/maml_rl.py [--retrain] [--goals 500] [--ablation | --ablation-only [--variants ...]] [--out FILE]``
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

import torch

from metalib import TrainConfig
from metalib.checkpoint import checkpoint_dir
from metalib.rl.maml_rl import GaussianMLPPolicy
from metalib.rl.maml_rl_train import MAMLRLConfig, evaluate_adaptation, load_maml_policy, save_maml_policy, train_maml_rl
from metalib.rl.nav2d import STAY_AT_ORIGIN, Nav2D, oracle_action, play
from _report import cpu_name, emit  # benchmarks/_report.py (scripts run from this folder)

MAML_CKPT, PRE_CKPT = "maml_rl_nav2d.pt", "maml_rl_pretrained_nav2d.pt"
CONFIG = MAMLRLConfig()
PRETRAIN = dataclasses.replace(CONFIG, inner_steps=0, train=dataclasses.replace(CONFIG.train, steps=600))  # to convergence
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
ABLATION = {  # name -> changes to CONFIG (each trained for --ablation-steps meta-updates)
    "recipe": {},
    "outer loss after the last inner step only": {"loss_every_step": False},
    "1 inner step in meta-training": {"inner_steps": 1},
    "no baseline": {"baseline": "none"},
    "normalised advantages (α 0.1)": {"normalize": True, "inner_lr": 0.1},
    "α = 0.003": {"inner_lr": 0.003},
    "α = 0.3": {"inner_lr": 0.3},
    "K = 5 trajectories": {"trajectories": 5},
    "first order": {"first_order": True},
    "PPO outer (4 epochs)": {"outer": "ppo"},
}


def retrain(cfg: MAMLRLConfig, name: str, command: str) -> None:
    load0, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    policy, hist = train_maml_rl(cfg, progress=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    save_maml_policy(checkpoint_dir() / name, policy, cfg, command=command, train_seconds=wall, train_cpu_seconds=cpu,
                     device="cpu", threads=torch.get_num_threads(), load_avg_at_start=load0,
                     load_avg_at_end=os.getloadavg()[0], stopped=hist.stopped,
                     train_pre=[round(h["pre"], 2) for h in hist.train], train_post=[round(h["post"], 2) for h in hist.train])
    print(f"trained {name}: {wall:.0f} s wall, {cpu:.0f} s CPU (load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end)")


def initial_policy(cfg: MAMLRLConfig) -> GaussianMLPPolicy:
    """The weights MAML started from (same seed, same constructor as `train_maml_rl`)."""
    torch.manual_seed(cfg.seed)
    return GaussianMLPPolicy(2, 2, cfg.hidden, cfg.init_std)


def adapt_curve(policy, cfg, goals, lr, seed=7):
    r = evaluate_adaptation(policy, goals, steps=3, k=cfg.trajectories, inner_lr=lr, gamma=cfg.gamma,
                            baseline=cfg.baseline, normalize=cfg.normalize, seed=seed)
    return r.mean(0), r.std(0) / goals.shape[0] ** 0.5


def best_lrs(policy, cfg, goals) -> list[float]:
    """For k = 1, 2, 3 steps: the α of LR_GRID with the best mean return after k steps on ``goals`` (validation)."""
    curves = {lr: evaluate_adaptation(policy, goals, steps=3, k=cfg.trajectories, inner_lr=lr, gamma=cfg.gamma,
                                      baseline=cfg.baseline, normalize=cfg.normalize, seed=3).mean(0).nan_to_num(-1e9)
              for lr in LR_GRID}
    return [max(LR_GRID, key=lambda lr: curves[lr][k].item()) for k in (1, 2, 3)]


def tuned_curve(policy, cfg, goals, lrs):
    """Column k from the run with α = lrs[k - 1] (column 0 does not depend on α)."""
    runs = {lr: adapt_curve(policy, cfg, goals, lr) for lr in set(lrs)}
    m0, se0 = runs[lrs[0]]
    m = torch.stack([m0[0]] + [runs[lr][0][k] for k, lr in enumerate(lrs, 1)])
    se = torch.stack([se0[0]] + [runs[lr][1][k] for k, lr in enumerate(lrs, 1)])
    return m, se


def row(name, m, se):
    return f"| {name} | " + " | ".join(f"{a:.1f} ± {b:.1f}" for a, b in zip(m.tolist(), se.tolist())) + " |"


def results_table(n_goals: int) -> str:
    maml, cfg, env, meta = load_maml_policy(MAML_CKPT)
    pre, _, _, pmeta = load_maml_policy(PRE_CKPT)
    goals = env.sample_tasks(n_goals, torch.Generator().manual_seed(2026))  # held out: seeds unused in training
    val = env.sample_tasks(100, torch.Generator().manual_seed(2027))
    lines = ["| initialisation (fine-tuning α) | 0 steps | 1 step | 2 steps | 3 steps |", "|---|---:|---:|---:|---:|"]
    lines.append(row(f"MAML (α {cfg.inner_lr:g})", *adapt_curve(maml, cfg, goals, cfg.inner_lr)))
    for name, pol in (("MAML", maml), ("pre-trained", pre), ("random init", initial_policy(cfg))):
        if name != "MAML":
            lines.append(row(f"{name} (α {cfg.inner_lr:g}, MAML's)", *adapt_curve(pol, cfg, goals, cfg.inner_lr)))
        lrs = best_lrs(pol, cfg, val)
        lines.append(row(f"{name} (α {' / '.join(f'{lr:g}' for lr in lrs)}: the best for 1 / 2 / 3 steps)",
                         *tuned_curve(pol, cfg, goals, lrs)))
    oracle = play(env, goals, lambda p: oracle_action(env, goals, p)).sum(1).mean().item()
    cpu = cpu_name()
    head = (f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
            f"device cpu, python {platform.python_version()}, load average now {os.getloadavg()[0]:.1f}. "
            f"{n_goals} held-out goals, K = {cfg.trajectories} trajectories per step; mean return ± s.e. over goals. "
            f"MAML: `{meta['command']}` ({meta['train_seconds']:.0f} s wall, {meta['train_cpu_seconds']:.0f} s CPU, "
            f"load average {meta['load_avg_at_start']:.1f} at start); pre-trained: {pmeta['train_seconds']:.0f} s wall, "
            f"{pmeta['train_cpu_seconds']:.0f} s CPU. References: stay at the origin {STAY_AT_ORIGIN:.1f}, "
            f"straight-line oracle {oracle:.2f}.")
    return head + "\n\n" + "\n".join(lines)


def ablation(steps: int, n_goals: int, names=None) -> str:
    goals = Nav2D().sample_tasks(n_goals, torch.Generator().manual_seed(2026))
    lines = [f"Each variant: {steps} meta-updates from the recipe's seed, then {n_goals} held-out goals.", "",
             "| variant | 0 steps | 1 step | 2 steps | 3 steps | CPU s |", "|---|---:|---:|---:|---:|---:|"]
    for name, changes in ABLATION.items():
        if names and not any(name.startswith(n) for n in names):
            continue
        cfg = dataclasses.replace(CONFIG, **changes, train=dataclasses.replace(CONFIG.train, steps=steps))
        c0 = time.process_time()
        policy, _ = train_maml_rl(cfg, progress=False)
        cpu = time.process_time() - c0
        line = row(name, *adapt_curve(policy, cfg, goals, cfg.inner_lr))
        lines.append(f"{line} {cpu:.0f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrain", action="store_true", help="train MAML and the pre-trained baseline again")
    ap.add_argument("--goals", type=int, default=500, help="held-out goals")
    ap.add_argument("--ablation", action="store_true", help="also train and evaluate the ablation variants")
    ap.add_argument("--ablation-steps", type=int, default=300, help="meta-updates per ablation variant")
    ap.add_argument("--variants", nargs="*", default=None, help="ablation variants (name prefixes; default all)")
    ap.add_argument("--ablation-only", action="store_true", help="skip the main table (no checkpoints needed)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.retrain:
        retrain(CONFIG, MAML_CKPT, "python benchmarks/maml_rl.py --retrain")
        retrain(PRETRAIN, PRE_CKPT, "python benchmarks/maml_rl.py --retrain")
    text = "" if args.ablation_only else results_table(args.goals)
    if args.ablation or args.ablation_only:
        text += "\n\n" + ablation(args.ablation_steps, min(args.goals, 200), args.variants)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
