"""MAML, FOMAML, ANIL, Meta-SGD and Reptile on Omniglot and sinusoids: learner, training, checkpoints.

* `MAMLLearner`: an ``nn.Module`` holding the network (and Meta-SGD's learned rates); ``meta_loss(task)``
  for training, ``predict(task, steps)`` / ``adapted(task, steps)`` for testing, with the strategy of
  `metalib.maml` (loop / batched / vmap) chosen per device from ``benchmarks/maml_speed.py``.
* `MAMLConfig` / `EXPERIMENTS`: one frozen config per shipped experiment; ``method="pretrain"`` is the
  baseline of the MAML paper's Fig. 2 (one network trained on all tasks jointly: zero inner steps);
  ``method="protomaml"`` starts the inner loop from the prototype head (`metalib.protomaml`, notebook 09).
* `train_maml`, `save_maml`, `load_maml`, `evaluate_maml` (accuracy or MSE after each number of steps).

Finn et al. (2017); Raghu et al. (2020, ANIL); Li et al. (2017, Meta-SGD); Nichol et al. (2018, Reptile);
Triantafillou et al. (2020, ProtoMAML).
Used by notebook 05, ``benchmarks/maml_accuracy.py`` and ``python -m metalib``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import maml, protomaml
from .checkpoint import load_checkpoint_of_kind, save_checkpoint
from .maml_batched import batched_functional, fast_functional, supports_batched
from .nets import MLP, Conv4
from .tasks import Task
from .train import History, TrainConfig, meta_train

__all__ = ["METHODS", "DEFAULT_STRATEGY", "MAMLLearner", "MAMLConfig", "EXPERIMENTS", "build_learner",
           "train_maml", "save_maml", "load_maml", "evaluate_maml", "Score"]

METHODS = ("maml", "fomaml", "anil", "metasgd", "reptile", "pretrain", "protomaml")
# Strategy per device type, measured by benchmarks/maml_speed.py (docs/RESULTS.md, "MAML meta-step speed"; Conv-4).
# CPU: the per-task loop beats grouped convolutions. CUDA (an H200): one batched pass of all tasks takes
# 0.06 s per meta-step at k = 1 and 0.16 s at k = 5, against 0.45-0.53 s and 2.1 s for the per-task loop.
DEFAULT_STRATEGY = {"cpu": "loop", "cuda": "batched"}


class MAMLLearner(nn.Module):
    """A network plus the inner loop of one MAML-family method.

    Args:
        model: the network (``Conv4(..., running_stats=False)`` or ``MLP``; any module with "loop");
            for "protomaml" a backbone without head (its head is made from each task's prototypes).
        method: one of `METHODS`.
        inner_lr: α (Meta-SGD: the initial value of every learned rate).
        steps: inner steps during meta-training.
        strategy: "loop", "batched", "vmap" or "auto" (`DEFAULT_STRATEGY` for the model's device).
        loss_fn: ``F.cross_entropy`` (classification) or ``F.mse_loss`` (regression).
        chunk: tasks per ``backward()`` in `meta_backward` (None: the whole meta-batch at once). One
            task at a time holds one task's graph in memory, as learn2learn does.
        inner_optimizer: "sgd" or "adam" (Reptile's inner Adam with β1 = 0; first-order methods only),
            in training and in `predict`; see `metalib.maml.adapt`.
        inner_batch: Reptile only: None (inner steps on the support set) or the minibatch size over
            each task's pooled support and query examples (`metalib.maml.reptile_loss`).
    """

    def __init__(self, model: nn.Module, method: str = "maml", inner_lr: float = 0.4, steps: int = 1,
                 strategy: str = "auto", loss_fn=F.cross_entropy, chunk: int | None = None,
                 inner_optimizer: str = "sgd", inner_batch: int | None = None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if strategy not in (*maml.STRATEGIES, "auto"):
            raise ValueError(f"strategy must be one of {(*maml.STRATEGIES, 'auto')}, got {strategy!r}")
        if strategy == "vmap" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError("strategy='vmap' gives a wrong second-order gradient through BatchNorm (torch.func's "
                             "batching of its double backward; tests/test_maml.py measures it): use "
                             "strategy='batched' (per-task statistics, exact) or 'loop'")
        if method == "protomaml" and (strategy == "vmap" or getattr(model, "head", None) is not None):
            raise ValueError("protomaml needs a backbone without head (Conv4(..., n_classes=None)) and "
                             "strategy 'loop', 'batched' or 'auto'")
        if inner_optimizer not in maml.INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {maml.INNER_OPTIMIZERS}, got {inner_optimizer!r}")
        if inner_optimizer != "sgd" and method not in ("fomaml", "reptile"):
            raise ValueError(f"inner_optimizer={inner_optimizer!r} is first order: use it with method 'fomaml' or "
                             f"'reptile', not {method!r}")
        if inner_batch is not None and method != "reptile":
            raise ValueError("inner_batch (minibatches of the pooled support and query sets) is Reptile's; "
                             f"method {method!r} adapts on the support set")
        self.model, self.method, self.inner_lr, self.steps = model, method, inner_lr, steps
        self.loss_fn, self._strategy, self.chunk = loss_fn, strategy, chunk
        self.inner_optimizer, self.inner_batch = inner_optimizer, inner_batch
        if method == "metasgd":  # ParameterDict keys may not contain dots
            self.lrs = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(torch.full_like(p, inner_lr))
                                         for n, p in model.named_parameters()})

    def learned_rates(self) -> dict[str, torch.Tensor]:
        """Meta-SGD: the learned inner rates, parameter name -> tensor of its shape (detached)."""
        if self.method != "metasgd":
            raise ValueError(f"only Meta-SGD learns its inner rates; method {self.method!r} uses α = {self.inner_lr}")
        return {n.replace("__", "."): r.detach() for n, r in self.lrs.items()}

    @property
    def strategy(self) -> str:
        if self._strategy != "auto":
            return self._strategy
        device = next(self.model.parameters()).device.type
        choice = DEFAULT_STRATEGY.get(device, "loop")
        return choice if choice != "batched" or supports_batched(self.model) else "loop"

    def _args(self, steps: int, first_order: bool) -> dict:
        params = dict(self.model.named_parameters())
        fmodel = fast_functional(self.model)
        names = [n for n in params if n.startswith("head.")] if self.method == "anil" else None
        rate = ({n: self.lrs[n.replace(".", "__")] for n in params} if self.method == "metasgd" else self.inner_lr)
        bfmodel = batched_functional(self.model) if self.strategy == "batched" else None
        return dict(fmodel=fmodel, params=params, inner_lr=rate, steps=steps, first_order=first_order,
                    loss_fn=self.loss_fn, names=names, strategy=self.strategy, bfmodel=bfmodel,
                    optimizer=self.inner_optimizer)

    def meta_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """(meta-loss, query outputs (B, M, ...)) of a meta-batch; ``.backward()`` gives the method's meta-gradient."""
        if self.method == "reptile":
            a = self._args(self.steps, True)
            return maml.reptile_loss(a["fmodel"], a["params"], task, inner_lr=self.inner_lr, steps=self.steps,
                                     loss_fn=self.loss_fn, names=a["names"], strategy=a["strategy"],
                                     bfmodel=a["bfmodel"], optimizer=self.inner_optimizer,
                                     inner_batch=self.inner_batch)
        steps = 0 if self.method == "pretrain" else self.steps
        return self._meta_loss(task, steps, self.method == "fomaml")

    def _meta_loss(self, task: Task, steps: int, first_order: bool) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._args(steps, first_order)
        if self.method == "protomaml":
            return protomaml.meta_loss(a["fmodel"], a["params"], task, inner_lr=a["inner_lr"], steps=steps,
                                       first_order=first_order, strategy=a["strategy"], bfembed=a["bfmodel"])
        return maml.meta_loss(a.pop("fmodel"), a.pop("params"), task, **a)

    def meta_backward(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """`meta_loss` with ``backward()`` per ``chunk`` tasks (gradients accumulate in ``.grad``).

        Returns the detached mean meta-loss and the query outputs; the gradient equals ``meta_loss(task)
        .backward()``'s, while at most ``chunk`` tasks' graphs are alive at once.
        """
        T = task.batch_size
        c = self.chunk or T
        losses, outputs = [], []
        for lo in range(0, T, c):
            part = task.select(slice(lo, lo + c))
            loss, out = self.meta_loss(part)
            (loss * (part.batch_size / T)).backward()
            losses.append(loss.detach() * part.batch_size)
            outputs.append(out.detach())
        return torch.stack(losses).sum() / T, torch.cat(outputs)

    def predict(self, task: Task, steps: int | None = None) -> torch.Tensor:
        """Query outputs (B, M, ...) after ``steps`` (default: the training steps) first-order inner steps.

        At test time no meta-gradient is needed, so the steps are first order (same parameters, no graph).
        The pre-trained baseline fine-tunes with the same inner learning rate.
        """
        steps = self.steps if steps is None else steps
        with torch.enable_grad():
            _, out = self._meta_loss(task, steps, True)
        return out.detach()

    def forward(self, task: Task) -> torch.Tensor:
        return self.predict(task)


@dataclass(frozen=True)
class MAMLConfig:
    """One MAML-family experiment.

    Attributes:
        method: one of `METHODS`.
        dataset: "omniglot" (Conv-4 with per-task BatchNorm) or "sinusoid" (MLP 1-40-40-1, MSE; the
            MAML paper's section 5.1).
        split: the Omniglot class split (`metalib.data.splits`): "vinyals", the published lists the
            papers use (default), or "random", the stand-in two early GPU checkpoints were trained on.
        n_way, k_shot, n_query: Omniglot episodes (N classes, K support and Q queries per class); for
            sinusoids K support points and Q query points (n_way is ignored).
        inner_lr, inner_steps: α and the inner steps during meta-training.
        inner_optimizer, inner_batch: see `MAMLLearner` (Reptile's recipe: "adam" and a minibatch size).
        outer: "adam" (the outer optimiser of every method, learning rate ``train.lr``) or "sgd-anneal":
            SGD whose learning rate falls linearly from ``train.lr`` to 0 over ``train.steps``; with
            Reptile's gradient θ − φ̄ that is the paper's θ ← θ + ε (φ̄ − θ), ε annealed from ``train.lr``.
        eval_steps: inner steps at validation and test.
        hidden: Conv-4 filters per block or MLP width.
        strategy: see `MAMLLearner`.
        chunk: tasks per backward pass (see `MAMLLearner`; None: all tasks at once).
        val_episodes: validation tasks at every ``train.eval_every``.
        train: the outer loop (steps, meta-batch of tasks, Adam lr, clipping, seed).
    """
    method: str = "maml"
    dataset: str = "omniglot"
    split: str = "vinyals"
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 5
    inner_lr: float = 0.4
    inner_steps: int = 1
    inner_optimizer: str = "sgd"
    inner_batch: int | None = None
    outer: str = "adam"
    eval_steps: int = 3
    hidden: int = 64
    strategy: str = "auto"
    chunk: int | None = 1
    val_episodes: int = 200
    train: TrainConfig = TrainConfig(steps=2000, meta_batch=16, lr=1e-3, eval_every=250)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.dataset not in ("omniglot", "sinusoid"):
            raise ValueError(f"dataset must be 'omniglot' or 'sinusoid', got {self.dataset!r}")
        if self.method == "protomaml" and self.dataset != "omniglot":
            raise ValueError("protomaml classifies (its head is made of class prototypes): use dataset='omniglot'")
        if self.outer not in ("adam", "sgd-anneal"):
            raise ValueError(f"outer must be 'adam' or 'sgd-anneal', got {self.outer!r}")

    def quick_overrides(self) -> dict:
        """Quick mode: a few small meta-batches and validation tasks, same code path."""
        q = min(self.n_query, 2)
        return {"train": dataclasses.replace(self.train, **self.train.quick_overrides()), "val_episodes": 4,
                "hidden": min(self.hidden, 16), "n_query": q,  # Reptile's minibatch: all the pooled examples
                "inner_batch": None if self.inner_batch is None else self.n_way * (self.k_shot + q)}

    @classmethod
    def from_dict(cls, d: dict) -> "MAMLConfig":
        """Inverse of the plain dict stored in a checkpoint."""
        return cls(**{**d, "train": TrainConfig(**d["train"])})


_OMNI = TrainConfig(steps=3000, meta_batch=16, lr=1e-3, eval_every=500)  # ~35 min on the 2-core CPU
_FAMILY = dataclasses.replace(_OMNI, steps=1000, eval_every=250)  # the variants: shorter runs, same recipe
_SINE = TrainConfig(steps=70000, meta_batch=25, lr=1e-3, eval_every=5000)  # the paper: 70000 meta-steps of 25 tasks
# The paper's settings for a GPU (Finn et al. 2017, section 5.2): meta-batches of 32 (5-way) and 16 (20-way)
# tasks, all tasks of a meta-batch in one batched pass (chunk None). Run with ``--time-budget`` to fit a lease.
_GPU = TrainConfig(steps=60000, meta_batch=32, lr=1e-3, eval_every=2000)
# data/checkpoints/<name>.pt, trained by ``python benchmarks/maml_accuracy.py --retrain NAME``
EXPERIMENTS = {
    "maml_5w1s": MAMLConfig("maml", train=_OMNI),
    # FOMAML with MAML's single inner step learned slowly (63% after 1000 steps), along the same validation curve
    # as learn2learn's MAML(first_order=True) (issue 19, benchmarks/first_order.py): more inner steps, k = 5.
    "fomaml_5w1s": MAMLConfig("fomaml", inner_steps=5, eval_steps=5, train=_FAMILY),
    "fomaml_5w1s_k1": MAMLConfig("fomaml", train=_FAMILY),  # the earlier recipe (the checkpoint shipped before issue 19)
    "anil_5w1s": MAMLConfig("anil", train=_FAMILY),
    # Reptile as Nichol et al. (2018) ran it for transductive Omniglot 5-way 1-shot (supervised-reptile's README):
    # 15 examples per class in the inner loop (the support and 14 queries pooled), 3 steps of Adam (β1 = 0,
    # 1e-3) on minibatches of 25, meta-batch 10, outer SGD step ε from 1 linearly to 0; 5 Adam steps at test.
    # The paper runs 100,000 meta-steps (ε annealed over them); this CPU recipe 1000.
    "reptile_5w1s": MAMLConfig("reptile", n_query=14, inner_lr=1e-3, inner_steps=3, inner_optimizer="adam",
                               inner_batch=25, outer="sgd-anneal", eval_steps=5,
                               train=dataclasses.replace(_FAMILY, meta_batch=10, lr=1.0)),
    # the earlier recipe (shipped before issue 19): 5 SGD steps on the 1-shot support set only, Adam outer loop
    "reptile_5w1s_sgd": MAMLConfig("reptile", inner_lr=0.1, inner_steps=5, eval_steps=5, train=_FAMILY),
    "maml_5w1s_gpu": MAMLConfig("maml", n_query=15, chunk=None, train=_GPU),
    "maml_20w1s_gpu": MAMLConfig("maml", n_way=20, inner_lr=0.1, inner_steps=5, eval_steps=5, chunk=None,
                                 train=dataclasses.replace(_GPU, meta_batch=16)),
    # tiny MLPs: one batched pass (bmm) of all tasks beats a per-task loop
    "maml_sine_k10": MAMLConfig("maml", "sinusoid", k_shot=10, n_query=10, inner_lr=0.01, eval_steps=10,
                                hidden=40, strategy="batched", chunk=None, val_episodes=100, train=_SINE),
    # Meta-SGD (Li et al. 2017): MAML's recipe with a learned rate per parameter, every rate starting at MAML's α;
    # its rates are learned for one step, so it is validated after one step
    "metasgd_sine_k10": MAMLConfig("metasgd", "sinusoid", k_shot=10, n_query=10, inner_lr=0.01, eval_steps=1,
                                   hidden=40, strategy="batched", chunk=None, val_episodes=100, train=_SINE),
    "pretrain_sine_k10": MAMLConfig("pretrain", "sinusoid", k_shot=10, n_query=10, inner_lr=0.01, eval_steps=10,
                                    hidden=40, strategy="batched", chunk=None, val_episodes=100, train=_SINE),
}


def build_learner(cfg: MAMLConfig) -> MAMLLearner:
    """A fresh learner (seeded by ``cfg.train.seed``) described by ``cfg``."""
    torch.manual_seed(cfg.train.seed)
    if cfg.dataset == "sinusoid":
        return MAMLLearner(MLP(1, [cfg.hidden, cfg.hidden], 1), cfg.method, cfg.inner_lr, cfg.inner_steps,
                           cfg.strategy, F.mse_loss, cfg.chunk, cfg.inner_optimizer, cfg.inner_batch)
    net = Conv4(hidden=cfg.hidden, n_classes=None if cfg.method == "protomaml" else cfg.n_way, running_stats=False)
    return MAMLLearner(net, cfg.method, cfg.inner_lr, cfg.inner_steps, cfg.strategy, chunk=cfg.chunk,
                       inner_optimizer=cfg.inner_optimizer, inner_batch=cfg.inner_batch)


def task_sampler(cfg: MAMLConfig, part: str, *, device=None, data=None, seed: int = 0):
    """``sample(batch) -> Task`` for ``part`` ("train", "val", "test") of the experiment's dataset."""
    from .data import SinusoidTasks, load_omniglot, omniglot_split
    from .device import get_device
    from .tasks import EpisodeSampler

    device = device or get_device()
    if cfg.dataset == "sinusoid":
        gen = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[part] * 7919)
        return lambda b: SinusoidTasks().sample(b, cfg.k_shot, cfg.n_query, generator=gen, device=device)
    split = omniglot_split(data if data is not None else load_omniglot(), cfg.split, part, device=device)
    return EpisodeSampler(split, cfg.n_way, cfg.k_shot, cfg.n_query, seed=seed).sample


class Score(NamedTuple):
    """Mean ± 95% CI over the tasks with a finite score, their median, and how many diverged (inf/NaN)."""
    mean: float
    ci95: float
    median: float
    diverged: int


def evaluate_maml(learner: MAMLLearner, sample, *, steps=(0, 1, 3), episodes: int = 600, batch_size: int = 25
                  ) -> dict[int, Score]:
    """A `Score` after each number of inner steps, on the same ``episodes`` tasks for every count.

    Classification: query accuracy; regression (MSE loss): query mean squared error. Adaptation can
    diverge on a few tasks (more steps than meta-trained for, at the same α): those are counted in
    ``diverged`` and left out of the mean, which would otherwise be inf or NaN; report both.
    """
    from .evaluate import mean_ci95, query_accuracy

    regression = learner.loss_fn is F.mse_loss
    scores = {s: [] for s in steps}
    done = 0
    while done < episodes:
        task = sample(min(batch_size, episodes - done))
        for s in steps:
            out = learner.predict(task, s)
            scores[s].append(((out - task.y_query) ** 2).flatten(1).mean(1) if regression
                             else query_accuracy(out, task.y_query))
        done += task.batch_size
    result = {}
    for s, v in scores.items():
        v = torch.cat(v).cpu().double()
        ok = torch.isfinite(v)
        mean, ci = mean_ci95(v[ok]) if ok.any() else (float("nan"), float("nan"))
        result[s] = Score(mean, ci, float(v[ok].median()) if ok.any() else float("nan"), int((~ok).sum()))
    return result


def train_maml(cfg: MAMLConfig, *, device=None, data=None, progress: bool = True, log=None,
               checkpoint: str | Path | None = None, sample=None, **meta) -> tuple[MAMLLearner, History]:
    """Meta-train ``cfg`` through `metalib.meta_train`, validating after ``cfg.eval_steps`` inner steps.

    ``sample(batch) -> Task`` replaces the training tasks of ``cfg``'s split (e.g. a sampler with
    ``fixed_labels``, notebook 09).

    Returns the learner and its `History` (train loss and accuracy or MSE; validation after
    ``eval_steps``; wall time). Ctrl-C stops early and keeps (and saves) the model.
    """
    from .device import get_device

    device = device or get_device()
    learner = build_learner(cfg).to(device)
    train = sample or task_sampler(cfg, "train", device=device, data=data, seed=cfg.train.seed)
    regression = cfg.dataset == "sinusoid"

    def step_loss(task: Task):
        loss, out = learner.meta_backward(task)  # gradients accumulated, ``chunk`` tasks at a time
        metric = (out.detach().argmax(-1) == task.y_query).float().mean() if not regression else loss.detach()
        return loss, {"mse" if regression else "acc": metric}

    validate = None
    if cfg.val_episodes:
        val_tasks = task_sampler(cfg, "val", device=device, data=data, seed=0)(cfg.val_episodes)  # fixed tasks

        def validate():
            mean = evaluate_maml(learner, lambda b, it=iter([val_tasks]): next(it), steps=(cfg.eval_steps,),
                                 episodes=cfg.val_episodes, batch_size=cfg.val_episodes)[cfg.eval_steps][0]
            if log is not None:
                log(f"{time.strftime('%H:%M:%S')} {time.perf_counter() - start:.0f} s: validation "
                    f"{'MSE' if regression else 'accuracy'} after {cfg.eval_steps} steps {mean:.4f}")
            return {"mse" if regression else "acc": mean}

    optimizer = scheduler = None
    if cfg.outer == "sgd-anneal":  # Reptile's outer step size ε, linearly to 0 (Nichol et al.'s --meta-step-final 0)
        optimizer = torch.optim.SGD(learner.parameters(), lr=cfg.train.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / cfg.train.steps)
    start = time.perf_counter()
    history = meta_train(learner, step_loss, train, cfg.train, validate=validate, progress=progress,
                         desc=f"{cfg.method} {cfg.dataset}", optimizer=optimizer, scheduler=scheduler)
    if checkpoint is not None:
        save_maml(learner, cfg, checkpoint, history=history.to_dict(), device=str(device),
                  train_seconds=time.perf_counter() - start, strategy=learner.strategy, **meta)
    return learner, history


def save_maml(learner: MAMLLearner, cfg: MAMLConfig, path: str | Path, **meta) -> Path:
    """State dict plus the config (so `load_maml` rebuilds the learner) and plain ``meta``."""
    return save_checkpoint(path, learner.state_dict(), config=cfg, kind="maml", **meta)


def load_maml(path: str | Path, device: str | torch.device = "cpu") -> tuple[MAMLLearner, dict]:
    """Rebuild a learner saved by `save_maml`; a bare name is looked up in ``data/checkpoints/``."""
    _, blob = load_checkpoint_of_kind(path, "maml", "metalib.maml_train.save_maml")
    meta = blob["meta"]
    learner = build_learner(MAMLConfig.from_dict(meta["config"]))
    learner.load_state_dict(blob["state_dict"])
    return learner.to(device), meta
