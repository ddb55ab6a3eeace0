"""One evaluation for every shipped few-shot classifier: ``python -m metalib evaluate NAME [NAME ...]``.

Reads the checkpoints of `metalib.metric_train` (Prototypical Networks, Snell et al. 2017; Matching
Networks, Vinyals et al. 2016) and of `metalib.maml_train` (MAML, FOMAML, ANIL, Meta-SGD, Reptile; Finn
et al. 2017, Nichol et al. 2018), each tested the way it was trained (MAML family: its own test-time inner
steps). Several ProtoNets are evaluated as their ensemble, optionally with test-time augmentation
(`metalib.ensemble`). Protocols: the papers' 600 random test episodes of the split a model was trained on
(`metalib.metric_train.test_sampler`), or Lake et al.'s official 20 runs (`metalib.data.lake_runs`).
Used by notebooks 03 to 05 through the command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checkpoint import load_checkpoint, resolve_checkpoint
from .tasks import Task

__all__ = ["Classifier", "load_classifier", "make_predictor", "check_protocol", "select_by_validation", "LAKE_RUNS"]

LAKE_RUNS = "lake-runs"


@dataclass
class Classifier:
    """A loaded checkpoint: its model, how it predicts, and what it was trained on.

    Attributes:
        name: as given on the command line. method: "protonet", "matching", "maml", "fomaml", ...
        split: the class split it was trained on (`metalib.data.splits`). image_size: its input side.
        n_way: the fixed output size (MAML family) or None (metric learners take any N).
        steps: test-time inner steps (MAML family) or None.
    """
    name: str
    method: str
    model: torch.nn.Module
    split: str
    image_size: int = 28
    n_way: int | None = None
    steps: int | None = None

    def predict(self, task: Task) -> torch.Tensor:
        """Logits (B, N*Q, N) of the query images."""
        if self.steps is None:
            return self.model(task)
        return self.model.predict(task, self.steps)


def load_classifier(name: str, device="cpu", inner_steps: int | None = None) -> Classifier:
    """Load a ProtoNet / Matching Net / MAML-family checkpoint (a path, or a name in ``data/checkpoints/``).

    ``inner_steps`` overrides a MAML-family model's test-time steps (default: its config's ``eval_steps``).

    Raises:
        FileNotFoundError: no such checkpoint. ValueError: a kind ``evaluate`` cannot test (the message says
        what evaluates it).
    """
    from .maml_train import load_maml
    from .metric_train import load_metric

    path = resolve_checkpoint(name)
    meta = load_checkpoint(path)["meta"]
    kind, cfg = meta.get("kind"), meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if kind == "metric":
        model, meta = load_metric(path, device)
        cfg = meta["config"]
        return Classifier(name, cfg["method"], model, cfg.get("split", "vinyals"), cfg.get("image_size", 28))
    if kind == "maml":
        learner, meta = load_maml(path, device)
        cfg = meta["config"]
        if cfg.get("dataset", "omniglot") != "omniglot":
            raise ValueError(f"{path} is a {cfg['method']} model of {cfg['dataset']} regression, not a classifier; "
                             f"evaluate it with `python benchmarks/maml_accuracy.py` (notebook 05)")
        steps = cfg["eval_steps"] if inner_steps is None else inner_steps
        return Classifier(name, cfg["method"], learner, cfg.get("split", "vinyals"), 28, cfg["n_way"], steps)
    what = ("a black-box learner (`metalib.blackbox_train.load_blackbox`; `python benchmarks/blackbox.py` tests it)"
            if "learner" in cfg else "a reinforcement-learning policy (notebooks 07 and 08)" if "env" in meta
            else f"a checkpoint of kind {kind!r}")
    raise ValueError(f"{path} is {what}; `evaluate` tests the few-shot classifiers written by "
                     f"metalib.metric_train.save_metric (ProtoNet, Matching Net) and metalib.maml_train.save_maml "
                     f"(MAML, FOMAML, ANIL, Meta-SGD, Reptile)")


def check_protocol(classifiers: list[Classifier], split: str | None, n_way: int) -> str:
    """The test split to use (``split``, default the models' own), after checking that it is an honest test.

    A model is tested on the test classes of the split it was trained on (another split's test classes may
    be among its training classes); Lake et al.'s runs need a model trained on the background set only
    (``split="lake"``). A MAML-family model answers its own number of ways only.
    """
    trained = {c.split for c in classifiers}
    if len(trained) > 1:
        raise ValueError(f"an ensemble needs models trained on one split, got {sorted(trained)}")
    own = trained.pop()
    split = split or own
    need = "lake" if split == LAKE_RUNS else split
    if own != need:
        also = f" or {LAKE_RUNS}" if own == "lake" else ""
        raise ValueError(f"{', '.join(c.name for c in classifiers)} trained on the {own!r} split; test on its own "
                         f"test classes (--split {own}{also}): the {need!r} test classes may be among its training classes")
    for c in classifiers:
        if c.n_way is not None and c.n_way != n_way:
            raise ValueError(f"{c.name} ({c.method}) has a {c.n_way}-way output layer: evaluate it with --ways {c.n_way}"
                             + (f" (Lake et al.'s runs are 20-way)" if split == LAKE_RUNS else ""))
    sizes = {c.image_size for c in classifiers}
    if len(sizes) > 1:
        raise ValueError(f"an ensemble needs models of one image size, got {sorted(sizes)}")
    return split


def make_predictor(classifiers: list[Classifier], copies: int = 0) -> Callable[[Task], torch.Tensor]:
    """``predict(task)``: one model's logits, or (several ProtoNets, or ``copies`` > 0) the mean
    log-probabilities of `metalib.ensemble.ensemble_predictor`."""
    from .ensemble import ensemble_predictor

    if copies < 0:
        raise ValueError(f"--tta must be >= 0, got {copies}")
    if len(classifiers) == 1 and not copies:
        return classifiers[0].predict
    if any(c.steps is not None for c in classifiers):
        raise ValueError("ensembles and test-time augmentation are implemented for ProtoNets only, not the MAML family")
    return ensemble_predictor([c.model for c in classifiers], copies=copies)


def select_by_validation(metas: dict[str, dict]) -> str:
    """The name whose checkpoint reports the best final validation accuracy, among those whose validation
    classes were held out from training (``train_part`` "train"): a choice made without any test data.

    ``metas``: name -> checkpoint metadata (`metalib.metric_train.load_metric`'s second value). A model
    trained on its validation classes too (``train_part="trainval"``) has no honest validation number
    and is never chosen.
    """
    held_out = {n: m["history"]["val"][-1]["acc"] for n, m in metas.items()
                if m["config"].get("train_part", "train") == "train" and m.get("history", {}).get("val")}
    if not held_out:
        raise ValueError("no checkpoint with a held-out validation accuracy to choose by")
    return max(held_out, key=held_out.get)
