"""Memorisation: meta-learning that ignores the support set (Yin et al. 2020), measured with MAML.

Yin, Tucker, Zhou, Levine & Finn (2020), "Meta-Learning without Memorization" (taught in Stanford
CS330). If every class keeps the same label in every training task (*non-mutually-exclusive* tasks:
`EpisodeSampler(..., fixed_labels=True)`), one network can solve all training tasks at once by
learning the class -> label map, without reading the support set. Meta-training accuracy is then
high and says nothing: on new classes (whose labels no network can know in advance) accuracy is at
chance, and replacing the support set by noise leaves the training accuracy unchanged. Shuffling the
labels in every task (the default) makes the map different in every task, so the only way to be
right is to use the support set.

`run_memorization(cfg)` trains two MAMLs of the same size for the same steps, one on fixed and one on
shuffled labels, and measures both on (a) training tasks, (b) the same tasks with the support images
replaced by uniform noise, and (c) tasks of new classes. Notebook 09 runs it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from .data.splits import ClassSplit
from .tasks import EpisodeSampler, Task
from .train import TrainConfig

__all__ = ["MemorizationConfig", "class_subset", "noise_support", "run_memorization"]


@dataclass(frozen=True)
class MemorizationConfig:
    """The memorisation experiment: a small MAML on a few training classes, fixed vs shuffled labels.

    Attributes:
        classes: the first this many classes of the Vinyals train part are the training classes (a
            small set is memorised in CPU minutes; Yin et al. use them all).
        n_way, k_shot, n_query: the tasks (5-way 1-shot, 5 queries per class).
        hidden: Conv-4 filters per block. inner_lr, inner_steps, eval_steps: MAML's inner loop.
        episodes: test tasks per measurement.
        train: the outer loop of each of the two runs.
    """
    classes: int = 100
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 5
    hidden: int = 16
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_steps: int = 3
    episodes: int = 200
    train: TrainConfig = TrainConfig(steps=300, meta_batch=8, lr=3e-3, eval_every=0)

    def quick_overrides(self) -> dict:
        return {"classes": 20, "episodes": 4, "train": dataclasses.replace(self.train, **self.train.quick_overrides())}

    def maml_config(self):
        from .maml_train import MAMLConfig
        return MAMLConfig("maml", n_way=self.n_way, k_shot=self.k_shot, n_query=self.n_query, inner_lr=self.inner_lr,
                          inner_steps=self.inner_steps, eval_steps=self.eval_steps, hidden=self.hidden,
                          val_episodes=0, train=self.train)


def class_subset(split: ClassSplit, n: int) -> ClassSplit:
    """The first ``n`` classes of ``split``."""
    if not 1 <= n <= split.n_classes:
        raise ValueError(f"n must lie in 1..{split.n_classes}, got {n}")
    return ClassSplit(split.images[:n], split.class_names[:n], split.char_index[:n], f"{split.name}[:{n}]")


def noise_support(task: Task, generator: torch.Generator | None = None) -> Task:
    """The same tasks with every support image replaced by uniform noise in [0, 1] (labels kept)."""
    noise = torch.rand(task.x_support.shape, generator=generator, dtype=task.x_support.dtype,
                       device=task.x_support.device)
    return task._replace(x_support=noise)


def run_memorization(cfg: MemorizationConfig = MemorizationConfig(), *, data=None, device="cpu",
                     progress: bool = False, keep_learners: bool = False) -> dict[str, dict]:
    """Train a MAML on fixed and on shuffled labels; measure both three ways.

    Returns:
        ``{"fixed": r, "shuffled": r}`` with r: ``train_acc`` (training tasks, after ``eval_steps``),
        ``train_acc_0`` (the same without adapting), ``noise_acc`` (training tasks, support = noise),
        ``new_acc`` (new classes: the Vinyals test part, shuffled labels), each a (mean, ci95) pair, and
        ``history`` and ``seconds`` of the training run (and ``learner`` if ``keep_learners``). Every
        measurement uses the same tasks for both.
    """
    from .data import load_omniglot, omniglot_split
    from .maml_train import evaluate_maml, train_maml

    data = data if data is not None else load_omniglot()
    train_split = class_subset(omniglot_split(data, "vinyals", "train", device=device), cfg.classes)
    test_split = omniglot_split(data, "vinyals", "test", device=device)
    N, K, Q, E = cfg.n_way, cfg.k_shot, cfg.n_query, cfg.episodes
    new = EpisodeSampler(test_split, N, K, Q, seed=2).sample(E)
    results = {}
    for mode in ("fixed", "shuffled"):
        sampler = EpisodeSampler(train_split, N, K, Q, seed=cfg.train.seed, fixed_labels=mode == "fixed")
        start = time.perf_counter()
        learner, history = train_maml(cfg.maml_config(), device=device, data=data, progress=progress,
                                      sample=sampler.sample)
        seconds = time.perf_counter() - start
        seen = EpisodeSampler(train_split, N, K, Q, seed=1, fixed_labels=mode == "fixed").sample(E)
        noisy = noise_support(seen, torch.Generator(device=seen.x_support.device).manual_seed(3))

        def score(tasks: Task, steps: int) -> tuple[float, float]:
            s = evaluate_maml(learner, lambda b, it=iter([tasks]): next(it), steps=(steps,), episodes=E,
                              batch_size=E)[steps]
            return (s.mean, s.ci95)

        results[mode] = {"train_acc": score(seen, cfg.eval_steps), "train_acc_0": score(seen, 0),
                         "noise_acc": score(noisy, cfg.eval_steps), "new_acc": score(new, cfg.eval_steps),
                         "history": history.to_dict(), "seconds": seconds}
        if keep_learners:
            results[mode]["learner"] = learner
    return results
