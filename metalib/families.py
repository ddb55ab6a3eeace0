"""Every family on one split, one backbone and one wall-clock budget (notebook 09, ``benchmarks/families.py``).

Seven learners, each trained for the same number of seconds (`TrainConfig.time_budget`) with the same
Conv-4 (64 filters) on the published Vinyals split (`metalib.data.splits`), each with the course's own
recipe for its family, then tested on the same episodes of new classes:

* ``finetune``: pre-train a 1028·4-way classifier on the training classes, fit a new linear head on each
  task's support set (Chen et al. 2019's Baseline; `metalib.baselines`);
* ``blackbox``: the attention learner that reads (x, y) pairs (seed §2.1; `metalib.blackbox`);
* ``matching`` and ``protonet``: Matching Networks and Prototypical Networks (seed §2.2; `metalib.metric_train`);
* ``maml``, ``anil``, ``protomaml``: the inner-loop family (seed §2.3; `metalib.maml_train`, `metalib.protomaml`).

`train_family` trains one row, `evaluate_family` tests it (N-way K-shot on the Vinyals test classes,
and 1-shot on the digits domain, `metalib.data.digits_split`), `run_family` does both and returns the
plain dict that ``benchmarks/families.py`` stores for notebook 09. A learner whose output layer has a
fixed width (MAML, ANIL, the black-box learner: trained 5-way) has no answer for another N: "n/a".
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .train import TrainConfig

__all__ = ["FAMILIES", "LABELS", "SETTINGS", "DIGIT_SETTINGS", "RESULTS", "FamiliesConfig", "train_family",
           "evaluate_family", "run_family", "compact_history", "load_results", "markdown_tables"]

FAMILIES = ("finetune", "blackbox", "matching", "protonet", "maml", "anil", "protomaml")
LABELS = {"finetune": "fine-tuning baseline", "blackbox": "black-box (attention)", "matching": "Matching Nets",
          "protonet": "ProtoNets", "maml": "MAML", "anil": "ANIL", "protomaml": "ProtoMAML"}
SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))  # (N, K) on the Vinyals test classes
DIGIT_SETTINGS = ((5, 1), (10, 1))  # (N, K) on the digits
UNBOUNDED = 10 ** 7  # steps: the time budget ends every run
#: the shipped results (``benchmarks/families.py`` writes them; notebook 09 loads them)
RESULTS = Path(__file__).resolve().parents[1] / "data" / "results" / "families_vinyals.json"


@dataclass(frozen=True)
class FamiliesConfig:
    """The comparison's budget and test protocol.

    Attributes:
        budget_s: training seconds per method (wall clock, validation included).
        episodes: test episodes per setting (the papers: 600, mean ± 95% CI).
        queries: queries per class in a test episode.
        hidden: Conv-4 filters per block, for every method.
        seed: training seed of every method.
    """
    budget_s: float = 240.0
    episodes: int = 600
    queries: int = 5
    hidden: int = 64
    seed: int = 0

    def quick_overrides(self) -> dict:
        return {"budget_s": 1.0, "episodes": 4, "queries": 2, "hidden": 16}


def _train_cfg(fc: FamiliesConfig, **kw) -> TrainConfig:
    return TrainConfig(steps=UNBOUNDED, seed=fc.seed, time_budget=fc.budget_s, **kw)


def method_config(name: str, fc: FamiliesConfig):
    """The config of family ``name`` under ``fc``: each family's course recipe, bounded by time only."""
    from .baselines import PretrainConfig
    from .blackbox_train import BlackBoxConfig
    from .maml_train import MAMLConfig
    from .metric_train import MetricConfig

    h = fc.hidden
    if name == "finetune":
        return PretrainConfig(train=_train_cfg(fc, meta_batch=64, lr=1e-3, eval_every=0), hidden=h)
    if name == "blackbox":
        return BlackBoxConfig("attention", 5, 1, n_query=3, encoder="conv", conv_hidden=h, hidden=64, layers=2,
                              val_episodes=100, train=_train_cfg(fc, meta_batch=16, lr=2e-3, eval_every=100, grad_clip=1.0))
    if name in ("matching", "protonet"):  # the shipped recipe: 20-way 1-shot episodes, 5 queries per class
        return MetricConfig(name, 20, 1, 5, hidden=h, cosine_decay=False, val_ways=5, val_episodes=100,
                            train=_train_cfg(fc, meta_batch=1, lr=1e-3, eval_every=250))
    if name in ("maml", "anil", "protomaml"):  # the shipped 5-way 1-shot recipe (ProtoMAML: a smaller α)
        return MAMLConfig(name, n_way=5, k_shot=1, n_query=5, inner_lr=0.1 if name == "protomaml" else 0.4,
                          inner_steps=1, eval_steps=3, hidden=h, val_episodes=100,
                          train=_train_cfg(fc, meta_batch=16, lr=1e-3, eval_every=50))
    raise ValueError(f"unknown family {name!r}; choose one of {FAMILIES}")


def _quick(cfg):
    from .config import maybe_quick
    return maybe_quick(cfg)


def train_family(name: str, fc: FamiliesConfig, *, data=None, device=None, progress: bool = False
                 ) -> tuple[Callable, int | None, dict, dict]:
    """Train family ``name`` for ``fc.budget_s`` seconds.

    Returns:
        ``(predict, n_way, history, info)``: ``predict(task) -> logits`` for any test task; ``n_way`` the only
        N it can answer (None: any N); the `History` as a dict; ``info`` the config, steps and seconds.
    """
    from .data import load_omniglot, omniglot_split
    from .device import get_device

    device = device or get_device()
    data = data if data is not None else load_omniglot()
    cfg = _quick(method_config(name, fc))
    train = omniglot_split(data, "vinyals", "train", device=device)
    val = omniglot_split(data, "vinyals", "val", device=device)
    start = time.perf_counter()
    if name == "finetune":
        from .baselines import FinetuneConfig, finetune_predict, pretrain_classifier
        net, history = pretrain_classifier(train.images, cfg, seed=fc.seed, progress=progress)
        ft = _quick(FinetuneConfig())
        predict, n_way = (lambda t: finetune_predict(net, t, ft)), None
    elif name == "blackbox":
        from .blackbox_train import train_blackbox
        model, history = train_blackbox(cfg, train, val, progress=progress)
        order = torch.Generator(device=device).manual_seed(0)
        predict, n_way = (lambda t: model.predict(t, order)), cfg.n_way
    elif name in ("matching", "protonet"):
        from .metric_train import train_metric
        model, history = train_metric(cfg, train, val, progress=progress)

        def predict(t):
            with torch.no_grad():
                return model(t)
        n_way = None
    else:
        from .maml_train import train_maml
        learner, history = train_maml(cfg, device=device, data=data, progress=progress)
        predict = lambda t: learner.predict(t, cfg.eval_steps)  # noqa: E731
        n_way = None if name == "protomaml" else cfg.n_way
    seconds = time.perf_counter() - start
    info = {"config": dataclasses.asdict(cfg), "steps": len(history.train), "train_seconds": seconds,
            "stopped": history.stopped, "device": str(device)}
    return predict, n_way, history.to_dict(), info


def evaluate_family(predict: Callable, n_way: int | None, fc: FamiliesConfig, *, data=None, device=None,
                    settings=SETTINGS, digit_settings=DIGIT_SETTINGS) -> dict:
    """Test accuracy ``{"test": {"5w1s": [mean, ci95, episodes] or None, ...}, "digits": {...}}``.

    The same episodes for every method (a fixed seed per setting); None where the learner cannot answer N.
    """
    from .data import digits_split
    from .device import get_device
    from .evaluate import evaluate_accuracy
    from .metric_train import test_sampler
    from .tasks import EpisodeSampler

    device = device or get_device()
    out = {"test": {}, "digits": {}}
    digits = digits_split(device=device) if digit_settings else None
    for part, grid in (("test", settings), ("digits", digit_settings)):
        for n, k in grid:
            if n_way is not None and n != n_way:
                out[part][f"{n}w{k}s"] = None
                continue
            sampler = (test_sampler(n, k, n_query=fc.queries, device=device, data=data) if part == "test"
                       else EpisodeSampler(digits, n, k, fc.queries))
            acc = evaluate_accuracy(predict, sampler, episodes=fc.episodes, batch_size=10, seed=1234, progress=False)
            out[part][f"{n}w{k}s"] = [acc.mean, acc.ci95, acc.episodes]
    return out


def compact_history(history: dict, keep: int = 200) -> dict:
    """The history with at most ``keep`` training rows (every k-th, the last kept), validation rows all."""
    train = history["train"]
    stride = max(1, -(-len(train) // keep))
    rows = train[::stride] + ([train[-1]] if train and (len(train) - 1) % stride else [])
    return {**history, "train": rows}


def run_family(name: str, fc: FamiliesConfig = FamiliesConfig(), *, data=None, device=None,
               progress: bool = False, log=print) -> dict:
    """Train and test one family: the row ``benchmarks/families.py`` stores (plain values only)."""
    from .data import load_omniglot

    data = data if data is not None else load_omniglot()
    predict, n_way, history, info = train_family(name, fc, data=data, device=device, progress=progress)
    if log:
        log(f"{LABELS[name]}: {info['steps']} steps in {info['train_seconds']:.0f} s ({info['stopped']})")
    start = time.perf_counter()
    scores = evaluate_family(predict, n_way, fc, data=data, device=device)
    row = {"name": name, "label": LABELS[name], "n_way": n_way, **info, "history": compact_history(history),
           **scores, "test_seconds": time.perf_counter() - start}
    if log:
        log(f"{LABELS[name]}: " + ", ".join(f"{s} {100 * v[0]:.1f}%" for s, v in row["test"].items() if v)
            + f" (tested in {row['test_seconds']:.0f} s)")
    return row


def load_results(path: str | Path | None = None) -> dict:
    """The results file of ``benchmarks/families.py`` (default: the shipped `RESULTS`).

    Raises:
        FileNotFoundError: no such file; it says the command that makes it.
    """
    path = Path(path) if path is not None else RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist yet: make it with `OMP_NUM_THREADS=1 python benchmarks/families.py` "
                                "(seven training budgets plus the tests), or train the rows in notebook 09 (TRAIN_FROM_SCRATCH)")
    return json.loads(path.read_text())


def _cell(v) -> str:
    return "n/a" if v is None else f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"


def markdown_tables(results: dict) -> str:
    """The markdown tables of a results dict (``benchmarks/families.py``, notebook 09's appendix)."""
    fc, rows = results["config"], results["methods"]
    head = (f"Vinyals split (test: 423 characters x 4 rotations), Conv-4 with {fc['hidden']} filters, "
            f"{fc['budget_s']:.0f} s of training per method on {results['machine']}; {fc['episodes']} test episodes "
            f"per cell, {fc['queries']} queries per class, accuracy % ± 95% CI. Command: `{results['command']}` "
            f"({results['date']}).")
    keys = [f"{n}w{k}s" for n, k in results["settings"]]
    lines = [head, "", "| method | trained on | meta-steps | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in rows.values():
        c = r["config"]
        trained = ("all training classes (supervised)" if r["name"] == "finetune"
                   else f"{c['n_way']}-way {c['k_shot']}-shot")
        lines.append(f"| {r['label']} | {trained} | {r['steps']} | " + " | ".join(_cell(r["test"][k]) for k in keys) + " |")
    dkeys = [f"{n}w{k}s" for n, k in results["digit_settings"]]
    lines += ["", "Domain shift: meta-trained on Omniglot, tested on scikit-learn's 8x8 digits resized to 28x28.", "",
              "| method | Omniglot 5w1s | " + " | ".join(f"digits {k}" for k in dkeys) + " |", "|---|---|" + "---|" * len(dkeys)]
    for r in rows.values():
        lines.append(f"| {r['label']} | {_cell(r['test']['5w1s'])} | " + " | ".join(_cell(r["digits"][k]) for k in dkeys) + " |")
    mem = results.get("memorization")
    if mem:
        lines += ["", f"Memorisation (MAML, {mem['config']['classes']} training classes, "
                  f"{mem['config']['train']['steps']} meta-steps each; accuracy % after {mem['config']['eval_steps']} steps):", "",
                  "| labels | training tasks | same, without adapting | training tasks, support = noise | new classes |",
                  "|---|---|---|---|---|"]
        for mode in ("fixed", "shuffled"):
            m = mem[mode]
            lines.append(f"| {mode} | " + " | ".join(_cell(m[k]) for k in ("train_acc", "train_acc_0", "noise_acc", "new_acc")) + " |")
    return "\n".join(lines)
