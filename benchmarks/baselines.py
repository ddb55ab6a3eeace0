"""Few-shot baselines of notebook 01 on Omniglot test episodes (Vinyals split, rotations).

Measures, on 5-way 1-shot and 5-way 5-shot test episodes (15 queries per class), the query
accuracy with a 95% CI and the wall time of: pixel nearest neighbour, a Conv-4 trained from
scratch on D^tr alone, and a Conv-4 pre-trained on the meta-training classes then fine-tuned
(new linear head) on D^tr. Pre-trains and saves the shipped backbone
``data/checkpoints/pretrained_conv4_vinyals.pt`` if it is missing or with ``--retrain``.

Run: ``python benchmarks/baselines.py [--retrain] [--episodes 600] [--out FILE]``
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

import metalib
from metalib import baselines as bl
from metalib.checkpoint import checkpoint_dir
from _report import cpu_name, emit  # benchmarks/_report.py (scripts run from this folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retrain", action="store_true", help="pre-train the backbone again")
    ap.add_argument("--episodes", type=int, default=600, help="test episodes per setting")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    device = metalib.get_device()
    data = metalib.load_omniglot()
    train = metalib.omniglot_split(data, "vinyals", "train", device=device)
    test = metalib.omniglot_split(data, "vinyals", "test", device=device)
    path = checkpoint_dir() / bl.PRETRAINED_CHECKPOINT
    if args.retrain or not path.is_file():
        cfg = bl.PretrainConfig()
        start = time.perf_counter()
        net, hist = bl.pretrain_classifier(train.images, cfg)
        minutes = (time.perf_counter() - start) / 60
        last = hist.train[-100:]
        acc = sum(r["acc"] for r in last) / len(last)
        bl.save_backbone(net, path, command="python benchmarks/baselines.py --retrain", config=cfg,
                         train_minutes=minutes, device=str(device), final_train_acc=acc,
                         note="pre-trained on vinyals/train (4112 classes with rotations)")
        print(f"pre-trained backbone in {minutes:.1f} min on {device}, train acc (last 100 steps) {acc:.3f}: {path}")
    backbone, meta = bl.load_backbone(path)
    backbone.to(device)
    methods = {
        "pixel nearest neighbour": bl.pixel_nearest_neighbour,
        "Conv-4 from scratch on D^tr": lambda t: bl.train_from_scratch(t, bl.ScratchConfig()),
        "pre-trained Conv-4 + fine-tuned head": lambda t: bl.finetune_predict(backbone, t, bl.FinetuneConfig()),
    }
    rows = []
    for k_shot in (1, 5):
        sampler = metalib.EpisodeSampler(test, 5, k_shot, 15)
        for name, fn in methods.items():
            start = time.perf_counter()
            acc = metalib.evaluate_accuracy(fn, sampler, episodes=args.episodes, batch_size=50, desc=name)
            rows.append((f"5-way {k_shot}-shot", name, acc, time.perf_counter() - start))
            print(rows[-1][0], name, acc, f"{rows[-1][3]:.0f} s", flush=True)
    cpu = cpu_name()
    lines = [f"Machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {device}, "
             f"python {platform.python_version()}. Backbone: {meta.get('command')} "
             f"({meta.get('train_minutes', float('nan')):.1f} min on {meta.get('device')}).", "",
             "| setting | method | accuracy (95% CI) | episodes | wall time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {m} | {100 * a.mean:.1f} ± {100 * a.ci95:.1f}% | {a.episodes} | {t:.0f} |" for s, m, a, t in rows]
    table = "\n".join(lines)
    emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
