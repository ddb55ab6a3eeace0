"""Training, checkpoints and measurements of the black-box learners (`metalib.blackbox`).

* `BlackBoxConfig`: one frozen config per experiment (learner, N, K, encoder, sizes, outer loop);
* `train_blackbox`: the outer loop through `metalib.meta_train`, the loss on query positions only;
* `save_blackbox` / `load_blackbox`: shipped checkpoints rebuild their model from their metadata;
* measurements for notebook 02: `accuracy_by_position` (where in the support sequence the query's
  class appeared), `prototype_predict` (nearest class mean on the learner's own encoder, the
  ProtoNet rule of Snell et al. 2017, for the trade-off discussion).

Taught in notebook 02 (black-box meta-learning); benchmarked by ``benchmarks/blackbox.py``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .blackbox import AttentionLearner, BlackBoxLearner, LSTMLearner, query_loss, query_mask
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_accuracy, query_accuracy
from .tasks import EpisodeSampler, Task
from .train import History, TrainConfig, meta_train

__all__ = ["BlackBoxConfig", "EXPERIMENTS", "build_learner", "train_blackbox", "save_blackbox", "load_blackbox",
           "accuracy_by_position", "prototype_predict", "checkpoint_name"]


@dataclass(frozen=True)
class BlackBoxConfig:
    """One black-box meta-learning experiment on Omniglot.

    Attributes:
        learner: "lstm" (MANN-style) or "attention" (SNAIL-like causal transformer).
        n_way, k_shot: N classes per task, K support examples per class.
        n_query: queries per class in each training task (the loss averages over them).
        encoder: "conv" (Conv-4 trained end to end) or "flat" (784 raw pixels, as CS330 HW1).
        conv_hidden: Conv-4 filters per block (= feature size).
        batch_norm: Conv-4 with BatchNorm.
        hidden: LSTM state size, or transformer width d_model.
        layers: LSTM layers or transformer blocks.
        heads: attention heads (attention learner only).
        val_episodes: validation episodes (vinyals/val split) at each ``train.eval_every``.
        train: the outer loop (steps, meta-batch, Adam lr, gradient clipping, seed).
    """
    learner: str = "lstm"
    n_way: int = 2
    k_shot: int = 1
    n_query: int = 5
    encoder: str = "conv"
    conv_hidden: int = 32
    batch_norm: bool = True
    hidden: int = 128
    layers: int = 1
    heads: int = 4
    val_episodes: int = 200
    train: TrainConfig = TrainConfig(steps=1000, meta_batch=32, lr=2e-3, eval_every=100, grad_clip=1.0)

    def quick_overrides(self) -> dict:
        """Quick mode: a few steps and validation episodes, same code path."""
        return {"train": dataclasses.replace(self.train, **self.train.quick_overrides()), "val_episodes": 8}

    @classmethod
    def from_dict(cls, d: dict) -> "BlackBoxConfig":
        """Inverse of the plain dict stored in a checkpoint."""
        d = dict(d)
        d["train"] = TrainConfig(**d["train"])
        return cls(**d)


# The shipped experiments (data/checkpoints/blackbox_<name>.pt, trained by benchmarks/blackbox.py):
# the LSTM reads flat pixels (cheapest per step: most meta-updates in a 3-minute CPU budget), the
# attention learner a Conv-4 (5-way tasks need learned features).
LSTM_TRAIN = TrainConfig(steps=3000, meta_batch=32, lr=2e-3, eval_every=500, grad_clip=1.0)
ATT_TRAIN = TrainConfig(steps=1200, meta_batch=16, lr=2e-3, eval_every=200, grad_clip=1.0)
EXPERIMENTS = {
    "lstm_2w1s": BlackBoxConfig("lstm", 2, 1, encoder="flat", val_episodes=100, train=LSTM_TRAIN),
    "lstm_2w2s": BlackBoxConfig("lstm", 2, 2, encoder="flat", val_episodes=100, train=LSTM_TRAIN),
    "lstm_3w1s": BlackBoxConfig("lstm", 3, 1, encoder="flat", val_episodes=100, train=LSTM_TRAIN),
    "lstm_4w1s": BlackBoxConfig("lstm", 4, 1, encoder="flat", val_episodes=100, train=LSTM_TRAIN),
    "attention_5w1s": BlackBoxConfig("attention", 5, 1, n_query=3, encoder="conv", hidden=64, layers=2,
                                     train=ATT_TRAIN),
}


def build_learner(cfg: BlackBoxConfig) -> BlackBoxLearner:
    """A fresh (seeded by ``cfg.train.seed``) learner described by ``cfg``."""
    torch.manual_seed(cfg.train.seed)
    enc = dict(encoder=cfg.encoder, conv_hidden=cfg.conv_hidden, batch_norm=cfg.batch_norm)
    if cfg.learner == "lstm":
        return LSTMLearner(cfg.n_way, hidden=cfg.hidden, layers=cfg.layers, **enc)
    if cfg.learner == "attention":
        return AttentionLearner(cfg.n_way, d_model=cfg.hidden, heads=cfg.heads, layers=cfg.layers,
                                ff=2 * cfg.hidden, **enc)
    raise ValueError(f"learner must be 'lstm' or 'attention', got {cfg.learner!r}")


def train_blackbox(cfg: BlackBoxConfig, train_split, val_split=None, *, progress: bool = True,
                   checkpoint: str | Path | None = None, **meta) -> tuple[BlackBoxLearner, History]:
    """Meta-train a black-box learner on ``train_split`` episodes (the loss on query positions only).

    Args:
        cfg: the experiment; train_split / val_split: `ClassSplit`s (the model lives on their device).
        progress: progress bar. checkpoint: where to save (with ``meta``, e.g. ``command=...``).

    Returns:
        The trained learner (eval mode) and the `History` (train loss/acc, validation acc).
    """
    device = train_split.images.device
    model = build_learner(cfg).to(device)
    sampler = EpisodeSampler(train_split, cfg.n_way, cfg.k_shot, cfg.n_query, seed=cfg.train.seed)
    order = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)  # support orders

    def step_loss(task: Task):
        logits, targets = model(task, order)  # (B, T, N), (B, T)
        mask = query_mask(task.x_support.shape[1], task.x_query.shape[1], device)  # (T,)
        acc = query_accuracy(logits[:, mask].detach(), targets[:, mask]).mean()
        return query_loss(logits, targets, mask), {"acc": acc}

    validate = None
    if val_split is not None:
        val = EpisodeSampler(val_split, cfg.n_way, cfg.k_shot, 5)
        val_order = torch.Generator(device=device)

        def validate():
            val_order.manual_seed(0)
            acc = evaluate_accuracy(lambda t: model.predict(t, val_order), val, episodes=cfg.val_episodes,
                                    batch_size=min(100, cfg.val_episodes), seed=0, progress=False)
            return {"acc": acc.mean}

    start = time.perf_counter()
    history = meta_train(model, step_loss, sampler.sample, cfg.train, validate=validate, progress=progress,
                         desc=f"{cfg.learner} {cfg.n_way}-way {cfg.k_shot}-shot")
    model.eval()
    if checkpoint is not None:
        save_blackbox(model, cfg, checkpoint, history=history.to_dict(), device=str(device),
                      train_seconds=time.perf_counter() - start, **meta)
    return model, history


def save_blackbox(model: BlackBoxLearner, cfg: BlackBoxConfig, path: str | Path, **meta) -> Path:
    """Save the state dict with the config (so `load_blackbox` can rebuild it) and plain ``meta``."""
    return save_checkpoint(path, model.state_dict(), config=cfg, **meta)


def load_blackbox(path: str | Path, device: str | torch.device = "cpu") -> tuple[BlackBoxLearner, dict]:
    """Rebuild a learner saved by `save_blackbox`; returns (model in eval mode, metadata)."""
    blob = load_checkpoint(path)
    meta = blob["meta"]
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' in its metadata; it was not written by save_blackbox")
    model = build_learner(BlackBoxConfig.from_dict(meta["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), meta


def checkpoint_name(cfg: BlackBoxConfig) -> str:
    """``blackbox_<learner>_<N>w<K>s[_conv].pt`` (``_conv``: an LSTM on a Conv-4), the shipped file name."""
    suffix = "_conv" if cfg.learner == "lstm" and cfg.encoder == "conv" else ""
    return f"blackbox_{cfg.learner}_{cfg.n_way}w{cfg.k_shot}s{suffix}.pt"


def accuracy_by_position(model: BlackBoxLearner, sampler: EpisodeSampler, *, episodes: int = 600,
                         batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """Query accuracy as a function of where the query's class last appeared in the support sequence.

    Returns:
        (S,) accuracy for last-occurrence positions 0..S-1 (NaN where no query fell), S = N*K.
    """
    device = sampler.split.images.device
    gen = torch.Generator(device=device).manual_seed(seed)
    S = sampler.n_way * sampler.k_shot
    correct, count = torch.zeros(S), torch.zeros(S)
    for done in range(0, episodes, batch_size):
        task = sampler.sample(min(batch_size, episodes - done), generator=gen)
        with torch.no_grad():
            logits, targets = model(task, gen)  # (B, T, N), (B, T)
        y_order = targets[:, :S]  # (B, S) support labels in sequence order
        hits = (logits[:, S:].argmax(-1) == task.y_query).float().cpu()  # (B, M)
        same = y_order[:, None, :] == task.y_query[:, :, None]  # (B, M, S)
        last = (same * torch.arange(1, S + 1, device=device)).argmax(-1).cpu()  # (B, M) last position
        correct += torch.bincount(last.flatten(), hits.flatten(), minlength=S)
        count += torch.bincount(last.flatten(), minlength=S).float()
    return correct / count


def prototype_predict(encoder: torch.nn.Module, task: Task, n_way: int) -> torch.Tensor:
    """Nearest class mean on ``encoder``'s features: logits -|z(q) - c_y|^2 (B, M, N)."""
    with torch.no_grad():
        z_s, z_q = encoder(task.x_support), encoder(task.x_query)  # (B, S, D), (B, M, D)
        onehot = torch.nn.functional.one_hot(task.y_support, n_way).to(z_s.dtype)  # (B, S, N)
        protos = onehot.transpose(1, 2) @ z_s / onehot.sum(1)[..., None]  # (B, N, D)
        return -torch.cdist(z_q, protos) ** 2  # (B, M, N)
