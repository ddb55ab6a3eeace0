"""The meta-training loop every method uses: progress bar, validation, history, checkpoints.

The outer loop of the seed's §2 ("the meta-learner ... controls how the inner-loop learner
learns"): sample a meta-batch of tasks, compute the method's meta-loss (query loss after
adaptation), take an optimiser step. The method supplies only ``step_loss(task) -> (loss,
metrics)``; this module owns the loop, so ProtoNets, Matching Nets, MAML and black-box learners
all log, validate, checkpoint and fail the same way.

Taught in notebook 01 (the two loops); used from notebook 02 on.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from .checkpoint import save_checkpoint
from .tasks import Task

__all__ = ["TrainConfig", "History", "TrainingDiverged", "meta_train"]

RESERVED = {"step", "loss", "time"}  # columns History.train fills itself


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the outer (meta-training) loop.

    Attributes:
        steps: number of meta-updates (outer optimiser steps).
        meta_batch: tasks per meta-update (B).
        lr: Adam learning rate of the outer loop (beta in the seed's notation).
        eval_every: run ``validate`` every this many steps (0: never, except at the end).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        checkpoint: path to save the final (and interrupted) model; None: do not save.
        seed: seeds parameter initialisation where the caller uses `torch.manual_seed`.
        time_budget: stop after the step during which this many seconds of wall time have passed
            (validating and saving as at the end; ``History.stopped`` is "time budget"). None: no limit.
            For a live demo ("train for two minutes") or a lent GPU; ``steps`` stays the upper bound.
    """
    steps: int = 1000
    meta_batch: int = 32
    lr: float = 1e-3
    eval_every: int = 100
    grad_clip: float | None = None
    checkpoint: str | None = None
    seed: int = 0
    time_budget: float | None = None

    def quick_overrides(self) -> dict:
        """Quick mode (METALIB_QUICK=1): a handful of steps, same code path."""
        return {"steps": min(self.steps, 6), "meta_batch": min(self.meta_batch, 4),
                "eval_every": min(self.eval_every, 3) if self.eval_every else 0}


@dataclass
class History:
    """What happened during training, for plots and checkpoints.

    Attributes:
        train: one dict per step: ``step``, ``loss``, ``time`` (seconds since start) and the
            method's metrics (e.g. ``acc``).
        val: one dict per validation: ``step``, ``time`` and the validation metrics.
        stopped: "finished", "time budget", "interrupted", "diverged" or "error" (another exception).
    """
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    stopped: str = "finished"

    def series(self, key: str, which: str = "train") -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, for plotting."""
        rows = [r for r in getattr(self, which) if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "stopped": self.stopped}


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; ``.history`` holds everything up to that step."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


def _floats(metrics: Mapping[str, float | torch.Tensor], reserved: set[str], source: str) -> dict:
    """Metrics as plain floats; refuse names that History fills itself."""
    clash = reserved & set(metrics)
    if clash:
        raise ValueError(f"{source} returned metrics named {sorted(clash)}, which History reserves; rename them")
    return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in metrics.items()}


def meta_train(model: nn.Module, step_loss: Callable[[Task], tuple[torch.Tensor, Mapping]],
               sample: Callable[[int], Task], cfg: TrainConfig, *,
               validate: Callable[[], Mapping[str, float]] | None = None,
               optimizer: torch.optim.Optimizer | None = None,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, progress: bool = True,
               desc: str = "meta-train") -> History:
    """Run the outer loop: ``cfg.steps`` Adam steps on ``step_loss`` of sampled meta-batches.

    Args:
        model: holds every meta-parameter (an ``nn.Module``; a ParameterDict works too).
        step_loss: maps a meta-batch to (scalar meta-loss, dict of float metrics). A loss that does
            not require grad means step_loss has already accumulated the gradients itself (e.g. MAML
            calling ``backward()`` task by task to keep one task's graph in memory at a time).
        sample: maps a batch size to a meta-batch: a `Task` (e.g. ``EpisodeSampler.sample``) or
            anything ``step_loss`` accepts (the pre-training baseline passes (x, y) tuples).
        cfg: a `TrainConfig`.
        validate: returns validation metrics; called every ``cfg.eval_every`` steps and at the end.
        optimizer: defaults to ``Adam(model.parameters(), lr=cfg.lr)``.
        scheduler: a learning-rate schedule on ``optimizer``, stepped after every update.
        progress: show a tqdm progress bar.

    Returns:
        The `History`. Ctrl-C (KeyboardInterrupt) stops early and still returns it (and saves
        the checkpoint if configured): nothing is lost.

    Raises:
        TrainingDiverged: the loss became NaN/inf (message names the step and learning rate).
    """
    from tqdm.auto import tqdm

    if cfg.steps < 0:
        raise ValueError(f"steps must be >= 0, got {cfg.steps}")
    if cfg.time_budget is not None and cfg.time_budget < 0:
        raise ValueError(f"time_budget must be >= 0 seconds or None, got {cfg.time_budget}")
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, start = History(), time.perf_counter()
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, disable=not progress)
    try:
        for step in bar:
            opt.zero_grad(set_to_none=True)
            loss, metrics = step_loss(sample(cfg.meta_batch))
            metrics = _floats(metrics, RESERVED, "step_loss")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(_diverged_message(step, value, cfg, history), history)
            if loss.requires_grad:  # otherwise step_loss has already put the gradients in .grad
                loss.backward()
            elif all(p.grad is None for p in model.parameters()):
                raise RuntimeError("step_loss returned a loss that does not require grad and left no gradient "
                                   "in the model's parameters: return the loss with its graph (do not detach "
                                   "it), or call backward() inside step_loss")
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if scheduler is not None:
                scheduler.step()
            history.train.append({"step": step, "loss": value, "time": time.perf_counter() - start, **metrics})
            out_of_time = cfg.time_budget is not None and history.train[-1]["time"] >= cfg.time_budget
            if validate is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps
                                         or out_of_time):
                _validate(model, validate, history, step, start)
                bar.set_postfix({"loss": f"{value:.3f}", **{f"val {k}": f"{v:.3f}" for k, v in history.val[-1].items()
                                                            if k not in ("step", "time")}})
            elif step % 10 == 0:
                bar.set_postfix(loss=f"{value:.3f}")
            if out_of_time:
                history.stopped = "time budget"
                break
    except KeyboardInterrupt:
        history.stopped = "interrupted"
    except TrainingDiverged:
        history.stopped = "diverged"
        raise
    except BaseException:
        history.stopped = "error"
        raise
    finally:
        bar.close()
        if cfg.checkpoint and history.stopped in ("finished", "time budget", "interrupted"):
            save_checkpoint(cfg.checkpoint, model.state_dict(), config=cfg, history=history.to_dict())
    return history


def _validate(model: nn.Module, validate, history: History, step: int, start: float) -> None:
    model.eval()
    try:
        metrics = _floats(validate(), RESERVED - {"loss"}, "validate()")
    finally:
        model.train()
    history.val.append({"step": step, "time": time.perf_counter() - start, **metrics})


def _diverged_message(step: int, value: float, cfg: TrainConfig, history: History) -> str:
    last = history.train[-1]["loss"] if history.train else None
    hint = f"the last finite loss was {last:.4g} at step {step - 1}. " if last is not None else ""
    return (f"the meta-loss became {value} at step {step}: {hint}The likely cause is a learning rate too "
            f"high for this model (lr={cfg.lr:g}; try {cfg.lr / 10:g}), or an inner learning rate too high, "
            f"or a log/division of zero in the loss. The history up to here is in `err.history`.")
