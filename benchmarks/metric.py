"""Matching Networks and Prototypical Networks on Omniglot (notebooks 03 and 04).

Trains (``--retrain NAME ...``) or loads the shipped checkpoints ``data/checkpoints/<NAME>.pt``
(experiments in `metalib.metric_train.EXPERIMENTS`), then measures 5/20-way 1/5-shot accuracy on
the Vinyals test split (423 characters x 4 rotations, 15 queries per class, mean ± 95% CI over
``--episodes`` episodes) next to the papers, and, for the models trained on the background alphabets
only, the error on Lake et al.'s 20 official one-shot runs next to the published errors
(`metalib.data.lake_runs`) and on random within-alphabet episodes (a harder variant, not comparable).

Run: ``python benchmarks/metric.py [--retrain NAME ...] [--episodes 600] [--out FILE] [--stored] [--ensemble]``
(``--ensemble``: also test-time augmentation and the ensemble of the Lake models, `metalib.ensemble`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

import torch

import metalib
from metalib.checkpoint import checkpoint_dir
from metalib.data.lake_runs import PUBLISHED_ERROR, load_lake_runs, score_runs
from metalib.metric_train import EXPERIMENTS, evaluate_model, load_metric, test_sampler, train_metric
from _report import emit, machine  # benchmarks/_report.py (scripts run from this folder)

PAPER = {"protonet": {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9},
         "matching": {(5, 1): 98.1, (5, 5): 98.9, (20, 1): 93.8, (20, 5): 98.5}}
LAKE_PUBLISHED = ", ".join(f"{k} {v}%" for k, v in PUBLISHED_ERROR.items()) + " (Lake et al. 2015 unless named)"
SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
LAKE_TTA_COPIES = 8  # test-time distortions per image in the Lake table's TTA rows (each costs one more forward pass)


def retrain(name: str, folder: Path, episodes: int, time_budget: float | None = None) -> None:
    """Train one experiment, save it with its command, wall time and 1-shot test accuracies."""
    cfg = metalib.maybe_quick(EXPERIMENTS[name])
    if time_budget is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget=time_budget))
    budget = f" --time-budget {time_budget:g}" if time_budget is not None else ""
    load = os.getloadavg()[0]
    model, history = train_metric(cfg, progress=sys.stderr.isatty(), log=lambda line: print(line, flush=True))
    seconds = history.train[-1]["time"] if history.train else 0.0
    accs = {f"{n}w{k}s": evaluate_model(model, sampler, episodes=episodes, progress=False)
            for (n, k), sampler in _samplers(name)}
    from metalib.metric_train import save_metric
    save_metric(model, cfg, folder / f"{name}.pt", history=history.to_dict(), train_seconds=seconds,
                command=f"python benchmarks/metric.py --retrain {name}{budget}", machine=machine(),
                device=str(next(model.parameters()).device),
                load_average_at_start=load, test={k: [a.mean, a.ci95, a.episodes] for k, a in accs.items()})
    print(f"trained {name}: {len(history.train)} of {cfg.train.steps} steps ({history.stopped}) in {seconds:.0f} s "
          f"(load average {load:.2f}); " + ", ".join(f"{k} {a}" for k, a in accs.items()), flush=True)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _samplers(name: str):
    if EXPERIMENTS[name].split == "lake":
        return [((20, 1), test_sampler(20, 1, split="lake", within_alphabet=True, image_size=EXPERIMENTS[name].image_size))]
    settings = SETTINGS if EXPERIMENTS[name].similarity != "dot" else [s for s in SETTINGS if s[1] == 1]  # the comparison
    return [((n, k), test_sampler(n, k)) for n, k in settings]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retrain", nargs="+", metavar="NAME", choices=sorted(EXPERIMENTS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--folder", default=str(checkpoint_dir()), help="checkpoint folder")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--no-table", action="store_true", help="only retrain; skip measuring every checkpoint")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop each --retrain run after this much wall time (it is measured and saved as usual)")
    parser.add_argument("--stored", action="store_true",
                        help="print the table from the accuracies each checkpoint stored when --retrain measured it")
    parser.add_argument("--ensemble", action="store_true",
                        help=f"add Lake rows for test-time augmentation ({LAKE_TTA_COPIES} copies) and the ensemble "
                             "of the Lake ProtoNets, measured now (minutes)")
    args = parser.parse_args(argv)
    # a run started in the background (`nohup ... &`) inherits SIGINT ignored; restore it, so that
    # `kill -INT` stops training early and the model is still measured and saved (meta_train keeps it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = Path(args.folder)
    for name in args.retrain or []:
        retrain(name, folder, args.episodes, args.time_budget)
    if not args.no_table:
        emit(table(folder, args.episodes, stored=args.stored, ensemble=args.ensemble), args.out)
    return 0


def table(folder: Path, episodes: int, stored: bool = False, ensemble: bool = False) -> str:
    """The results table of every shipped checkpoint, measured now on ``episodes`` episodes per cell
    (``stored``: the accuracies measured by ``--retrain`` right after training, kept in the checkpoint;
    ``ensemble``: add the Lake rows of `lake_ensemble_rows`, always measured now)."""
    how = ("accuracies stored by `--retrain` right after training" if stored
           else f"measured now on {machine()}, {episodes} test episodes per cell")
    rows = [f"{how}; mean ± 95% CI; paper value in brackets.", "",
            "| model | train episodes | training time | " + " | ".join(f"{n}w{k}s" for n, k in SETTINGS) + " |",
            "|---|---|---|" + "---|" * len(SETTINGS)]
    lake = []
    for name in EXPERIMENTS:
        path = folder / f"{name}.pt"
        if not path.exists():
            continue
        model, meta = load_metric(path, device=metalib.get_device())
        cfg = EXPERIMENTS[name]
        load = meta.get("load_average_at_start")
        time_s = (f"{meta.get('train_seconds', 0) / 60:.1f} min on {meta.get('device', '?')}"
                  + (f" (load {load:.1f} at start)" if load is not None else ""))
        stopped = meta["history"].get("stopped", "finished")
        what = (f"{cfg.n_way}-way {cfg.k_shot}-shot, {len(meta['history']['train'])} steps"
                + (f", {cfg.hidden} filters" if cfg.hidden != 64 else "")
                + ("" if cfg.final_pool else ", no final max-pool")
                + (f" ({stopped})" if stopped != "finished" else "")
                + (", within one alphabet" if cfg.within_alphabet else "")
                + (", affine distortions" if getattr(cfg, "augment", False) else "")
                + ((", on the validation alphabets too" if cfg.split == "lake" else ", on train + val (Snell et al.'s protocol)")
                   if cfg.train_part == "trainval" else ""))
        cells = []
        for (n, k), sampler in _samplers(name):
            if stored:
                if f"{n}w{k}s" not in meta.get("test", {}):
                    continue
                mean, ci, count = meta["test"][f"{n}w{k}s"]
                acc = metalib.Accuracy(mean, ci, count)
            else:
                acc = evaluate_model(model, sampler, episodes=episodes, progress=False)
            cells.append((n, k, acc))
        if cfg.split == "lake":
            acc = cells[0][2]
            with torch.no_grad():  # the official runs: always measured now (one forward pass of 800 images)
                runs = score_runs(model, load_lake_runs(size=cfg.image_size), model_device(model))
            lake.append(f"| {name} | {what} | {time_s} | {runs.error:.1f} ± {runs.ci95:.1f}% | "
                        f"{100 * (1 - acc.mean):.1f} ± {100 * acc.ci95:.1f}% |")
            continue
        paper = PAPER[cfg.method] if cfg.similarity in ("euclidean", "cosine") and not cfg.fce else {}
        if meta.get("config", {}).get("split") == "random":  # trained on the old random permutation: no paper comparison
            paper, what = {}, what + "; **old random split**, not the paper's test"
        measured = {(n, k): a for n, k, a in cells}
        rows.append(f"| {name} | {what} | {time_s} | " + " | ".join(
            (f"{100 * measured[s].mean:.1f} ± {100 * measured[s].ci95:.1f}" if s in measured else "–")
            + (f" ({paper[s]})" if s in paper else "") for s in SETTINGS) + " |")
    if lake:
        rows += ["", f"Error on Lake et al.'s 20 official one-shot runs (20-way 1-shot within one alphabet, 400 trials; "
                     f"published: {LAKE_PUBLISHED}), and on {episodes} random within-alphabet 20-way 1-shot episodes of "
                     f"the 20 evaluation alphabets (a harder variant, NOT comparable with the published numbers):", "",
                 "| model | train episodes | training time | official runs | random within-alphabet episodes |",
                 "|---|---|---|---|---|", *lake, *(lake_ensemble_rows(folder, episodes) if ensemble else [])]
    return "\n".join(rows)


def lake_ensemble_rows(folder: Path, episodes: int, copies: int = LAKE_TTA_COPIES) -> list[str]:
    """Rows for the single Lake model chosen by validation (`select_by_validation`) with test-time
    augmentation, and for the ensemble of every Lake ProtoNet at 28x28 without and with it
    (`metalib.ensemble`; the official runs and the same random episodes as the table)."""
    from metalib.checkpoint_eval import select_by_validation
    from metalib.ensemble import ensemble_predictor

    names = [n for n in EXPERIMENTS if EXPERIMENTS[n].split == "lake" and EXPERIMENTS[n].method == "protonet"
             and EXPERIMENTS[n].image_size == 28 and (folder / f"{n}.pt").exists()]
    if not names:
        return []
    device = metalib.get_device()
    loaded = {n: load_metric(folder / f"{n}.pt", device=device) for n in names}
    models = {n: model for n, (model, _) in loaded.items()}
    sampler = test_sampler(20, 1, split="lake", within_alphabet=True, device=device)
    official = load_lake_runs()
    best = select_by_validation({n: meta for n, (_, meta) in loaded.items()})  # never by test data
    runs = [(f"{best} (chosen by validation), test-time augmentation ({copies} copies)", [best], copies)]
    if len(names) > 1:
        runs += [(f"ensemble of {len(names)}: {', '.join(names)}", names, 0),
                 (f"the same ensemble, test-time augmentation ({copies} copies)", names, copies)]
    rows = []
    for label, members, c in runs:
        with torch.no_grad():
            on_runs = score_runs(ensemble_predictor([models[n] for n in members], copies=c), official, device)
            acc = metalib.evaluate_accuracy(ensemble_predictor([models[n] for n in members], copies=c), sampler,
                                            episodes=episodes, batch_size=20, progress=False)
        rows.append(f"| {label} | (as above) | – | {on_runs.error:.1f} ± {on_runs.ci95:.1f}% | "
                    f"{100 * (1 - acc.mean):.1f} ± {100 * acc.ci95:.1f}% |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
