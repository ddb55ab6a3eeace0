"""Black-box meta-learners of notebook 02 on Omniglot test episodes (Vinyals split, rotations).

Trains (``--retrain``) or loads the shipped checkpoints ``data/checkpoints/blackbox_*.pt``:
the MANN-style LSTM for (N, K) = (2, 1), (2, 2), (3, 1), (4, 1) (CS330 homework 1 targets: > 90%,
> 90%, ~80%, > 60%, each trained in <= 3 CPU minutes) and the attention learner (SNAIL-like
causal transformer) for 5-way 1-shot (target >= 90%). Then measures on 600 test episodes (15
queries per class) the query accuracy with a 95% CI, and the trade-off table: learners tested
with more shots than they were trained on, against the nearest-prototype rule (ProtoNet's
classifier) on the same learner's encoder.

Run: ``python benchmarks/blackbox.py [--retrain [NAME ...]] [--episodes 600] [--out FILE]``
(NAME: lstm_2w1s, lstm_2w2s, lstm_3w1s, lstm_4w1s, attention_5w1s; no NAME: all). With --retrain NAME ... only those are evaluated afterwards.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

import metalib
from metalib.blackbox_train import (EXPERIMENTS, BlackBoxConfig, checkpoint_name, load_blackbox, prototype_predict,
                                    save_blackbox, train_blackbox)
from metalib.checkpoint import checkpoint_dir
import _report  # benchmarks/_report.py (scripts run from this folder)
from _report import emit

TARGETS = {"lstm_2w1s": "> 90%", "lstm_2w2s": "> 90%", "lstm_3w1s": "≈ 80%", "lstm_4w1s": "> 60%",
           "attention_5w1s": "≥ 90%"}
SHOTS = (1, 2, 5, 10)  # the trade-off table: test shots for learners trained with K = 1


def machine() -> str:
    return f"{_report.machine()}, load average at start {os.getloadavg()[0]:.2f}"


def retrain(name: str, train, val, test, episodes: int, folder) -> None:
    """Train one experiment, measure it on the test split, save the checkpoint with its command."""
    cfg = metalib.maybe_quick(EXPERIMENTS[name])
    load = os.getloadavg()[0]
    model, history = train_blackbox(cfg, train, val, progress=False)
    seconds = history.train[-1]["time"] if history.train else 0.0
    acc = evaluate(model, cfg, test, cfg.k_shot, episodes)
    save_blackbox(model, cfg, folder / checkpoint_name(cfg), history=history.to_dict(),
                  command=f"python benchmarks/blackbox.py --retrain {name}", train_seconds=seconds,
                  device=str(train.images.device), test_acc=acc.mean, test_ci95=acc.ci95, test_episodes=acc.episodes,
                  load_average_at_start=load)
    print(f"trained {name}: {len(history.train)} of {cfg.train.steps} steps ({history.stopped}) in {seconds:.0f} s "
          f"(load average {load:.2f}); test {acc}", flush=True)


def evaluate(model, cfg: BlackBoxConfig, test, k_shot: int, episodes: int, prototype: bool = False):
    """Query accuracy on ``episodes`` test episodes (N = cfg.n_way, ``k_shot`` shots, 15 queries)."""
    sampler = metalib.EpisodeSampler(test, cfg.n_way, k_shot, min(15, 20 - k_shot))  # (B, N*Q) queries
    if prototype:
        return metalib.evaluate_accuracy(lambda t: prototype_predict(model.encoder, t, cfg.n_way), sampler,
                                         episodes=episodes, progress=False)
    order = torch.Generator(device=test.images.device).manual_seed(0)
    return metalib.evaluate_accuracy(lambda t: model.predict(t, order), sampler, episodes=episodes, progress=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrain", nargs="*", default=None, help="train these experiments again (none named: all)")
    ap.add_argument("--episodes", type=int, default=600, help="test episodes per setting")
    ap.add_argument("--dir", default=str(checkpoint_dir()), help="checkpoint folder (default: the shipped ones)")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    args = ap.parse_args()
    device = metalib.get_device()
    header = f"Machine: {machine()}; device {device}."
    print(header, flush=True)
    data = metalib.load_omniglot()
    train, val, test = (metalib.omniglot_split(data, "vinyals", p, device=device) for p in ("train", "val", "test"))
    names = list(EXPERIMENTS)
    for name in (names if args.retrain == [] else args.retrain or []):
        if name not in EXPERIMENTS:
            ap.error(f"unknown experiment {name!r}; choose from {names}")
        retrain(name, train, val, test, args.episodes, Path(args.dir))
    rows, shots = [], []
    for name in args.retrain or names:  # the retrained ones, or all
        path = Path(args.dir) / checkpoint_name(EXPERIMENTS[name])
        if not path.is_file():
            print(f"skipping {name}: {path} missing (python benchmarks/blackbox.py --retrain {name})")
            continue
        model, meta = load_blackbox(path, device)
        cfg = EXPERIMENTS[name]
        start = time.perf_counter()
        acc = evaluate(model, cfg, test, cfg.k_shot, args.episodes)
        rows.append((name, cfg, meta, acc, time.perf_counter() - start))
        print(name, acc, flush=True)
        if cfg.k_shot == 1 and name in ("lstm_2w1s", "attention_5w1s"):
            for k in SHOTS:
                shots.append((name, k, evaluate(model, cfg, test, k, args.episodes),
                              evaluate(model, cfg, test, k, args.episodes, prototype=True)))
    proto = Path(args.dir) / "protonet_1shot.pt"  # notebook 04's shipped ProtoNet, for the side-by-side row
    if args.retrain is None and proto.is_file():
        from metalib.metric_train import load_metric
        net, meta = load_metric(proto, device)
        net_cfg = EXPERIMENTS["attention_5w1s"]
        start = time.perf_counter()
        with torch.no_grad():
            acc = metalib.evaluate_accuracy(net, metalib.EpisodeSampler(test, 5, 1, 15), episodes=args.episodes,
                                            progress=False)  # the same episodes as every other 5-way 1-shot row
        rows.append(("protonet (notebook 04)", dataclasses.replace(net_cfg, learner="ProtoNet (notebook 04)"),
                     meta, acc, time.perf_counter() - start))
    lines = [header, "", "| learner | setting | encoder | target | test accuracy (95% CI) | episodes | "
             "train steps | train time (s) | eval time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, cfg, meta, acc, secs in rows:
        lines.append(f"| {cfg.learner} | {cfg.n_way}-way {cfg.k_shot}-shot | {cfg.encoder} | {TARGETS.get(name, '–')} | "
                     f"{100 * acc.mean:.1f} ± {100 * acc.ci95:.1f}% | {acc.episodes} | {len(meta['history']['train'])} | "
                     f"{meta.get('train_seconds', float('nan')):.0f} | {secs:.0f} |")
    if shots:
        lines += ["", "Trained with K = 1, tested with more shots; nearest prototype = ProtoNet's rule on the "
                  "same learner's encoder (pixels for the flat encoder), no extra training.", "",
                  "| learner | test shots | black-box learner | nearest prototype, same encoder |", "|---|---|---|---|"]
        lines += [f"| {n} | {k} | {100 * a.mean:.1f} ± {100 * a.ci95:.1f}% | {100 * p.mean:.1f} ± {100 * p.ci95:.1f}% |"
                  for n, k, a, p in shots]
    table = "\n".join(lines)
    emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
