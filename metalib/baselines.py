"""Few-shot baselines that do not meta-learn (notebook 01).

* pixel nearest neighbour: label of the closest support image in pixel space;
* train from scratch: a fresh Conv-4 classifier trained on D^tr alone, per task;
* pre-train + fine-tune: a Conv-4 classifier trained on all meta-training classes (ordinary
  supervised learning, the seed's §2.3 "pre-trained network" paradigm), then a new N-way head
  (or the whole net) fine-tuned on D^tr, as in Chen et al. 2019 ("A Closer Look at Few-shot
  Classification", Baseline / Baseline++ without the cosine head).

All return logits (B, N*Q, N) or labels (B, N*Q) for `metalib.evaluate.evaluate_accuracy`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .nets import Conv4
from .tasks import Task
from .train import TrainConfig, History, meta_train

__all__ = ["pixel_nearest_neighbour", "ScratchConfig", "train_from_scratch", "PretrainConfig",
           "pretrain_classifier", "FinetuneConfig", "finetune_predict", "PRETRAINED_CHECKPOINT",
           "save_backbone", "load_backbone"]

#: the shipped backbone of the pre-train + fine-tune baseline (benchmarks/baselines.py makes it)
PRETRAINED_CHECKPOINT = "pretrained_conv4_vinyals.pt"


def pixel_nearest_neighbour(task: Task) -> torch.Tensor:
    """Labels (B, N*Q): each query takes the label of its nearest support image (Euclidean, pixels)."""
    xs = task.x_support.flatten(2)  # (B, N*K, D)
    xq = task.x_query.flatten(2)  # (B, N*Q, D)
    nearest = torch.cdist(xq, xs).argmin(-1)  # (B, N*Q)
    return torch.gather(task.y_support, 1, nearest)


@dataclass(frozen=True)
class ScratchConfig:
    """Training a fresh network on each task's D^tr alone.

    Attributes:
        steps: full-batch Adam steps on the N*K support images.
        lr: Adam learning rate.
        hidden: Conv-4 filters per block (no BatchNorm: 5 images give no useful batch statistics).
    """
    steps: int = 50
    lr: float = 3e-3
    hidden: int = 32

    def quick_overrides(self) -> dict:
        return {"steps": 3}


def train_from_scratch(task: Task, cfg: ScratchConfig = ScratchConfig(), *, seed: int = 0) -> torch.Tensor:
    """Logits (B, N*Q, N) of Conv-4 nets trained from random init, one per task, on D^tr alone.

    The B independent networks are trained at once: their parameters are stacked along a task
    dimension and ``torch.func.vmap`` runs each on its own task. The summed loss has per-task
    gradients that do not interact, and Adam is elementwise, so this equals training each
    network alone (tests/test_baselines.py checks it against that per-task loop).
    """
    from torch.func import functional_call, stack_module_state, vmap

    n_way = int(task.y_support.max()) + 1
    dev = task.x_support.device
    torch.manual_seed(seed)
    nets = [Conv4(hidden=cfg.hidden, n_classes=n_way, batch_norm=False).to(dev) for _ in range(task.batch_size)]
    params, _ = stack_module_state(nets)  # name -> (B, *shape), leaf tensors with grad
    base = nets[0]

    def logits(p, x):
        return functional_call(base, p, (x,))

    def loss(p, x, y):
        return F.cross_entropy(logits(p, x), y)

    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    for _ in range(cfg.steps):
        total = vmap(loss)(params, task.x_support, task.y_support).sum()  # sum of B independent losses
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    with torch.no_grad():
        return vmap(logits)(params, task.x_query)  # (B, N*Q, N)


def _fit(net, params, task: Task, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    net.train()
    for _ in range(steps):
        loss = F.cross_entropy(net(task.x_support), task.y_support)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pre-training on all meta-training classes.

    Attributes:
        train: outer-loop settings (steps, batch size as ``meta_batch``, lr, checkpoint).
        hidden: Conv-4 filters per block.
    """
    train: TrainConfig = TrainConfig(steps=2000, meta_batch=64, lr=1e-3, eval_every=0)
    hidden: int = 64

    def quick_overrides(self) -> dict:
        import dataclasses
        return {"train": dataclasses.replace(self.train, steps=5, meta_batch=16)}


def pretrain_classifier(images: torch.Tensor, cfg: PretrainConfig = PretrainConfig(), *, seed: int = 0,
                        progress: bool = True) -> tuple[Conv4, History]:
    """Train a Conv-4 classifier over all classes of ``images`` (C, M, H, W) uint8.

    Returns:
        (the network with its C-way head, the training `History`).
    """
    n_classes, per_class = images.shape[:2]
    dev = images.device
    torch.manual_seed(seed)
    net = Conv4(hidden=cfg.hidden, n_classes=n_classes).to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    def sample(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.randint(n_classes, (batch,), generator=gen, device=dev)
        d = torch.randint(per_class, (batch,), generator=gen, device=dev)
        return images[c, d].unsqueeze(1).float().div_(255), c  # (batch, 1, H, W), (batch,)

    def step_loss(batch):
        x, y = batch
        logits = net(x)
        return F.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()}

    history = meta_train(net, step_loss, sample, cfg.train, progress=progress, desc="pre-train")
    return net, history


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a pre-trained backbone on one task's D^tr.

    Attributes:
        steps: full-batch Adam steps.
        lr: Adam learning rate.
        mode: "head" (new linear head on frozen features, all tasks at once) or "all"
            (the whole network, one task at a time).
    """
    steps: int = 100
    lr: float = 1e-2
    mode: str = "head"

    def quick_overrides(self) -> dict:
        return {"steps": 3}


def finetune_predict(backbone: Conv4, task: Task, cfg: FinetuneConfig = FinetuneConfig()) -> torch.Tensor:
    """Logits (B, N*Q, N) after fine-tuning a fresh N-way head (and, with mode="all", the backbone)."""
    if cfg.mode not in ("head", "all"):
        raise ValueError(f"mode must be 'head' or 'all', got {cfg.mode!r}")
    n_way = int(task.y_support.max()) + 1
    if cfg.mode == "all":
        return _finetune_all(backbone, task, cfg, n_way)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        fs, fq = backbone.embed(task.x_support), backbone.embed(task.x_query)  # (B, N*K, D), (B, N*Q, D)
    backbone.train(was_training)
    B, D = fs.shape[0], fs.shape[-1]
    # one independent linear head per task; Adam is elementwise, so summing the task losses
    # trains each head exactly as if it were optimised alone
    w = torch.zeros(B, D, n_way, device=fs.device, requires_grad=True)
    b = torch.zeros(B, 1, n_way, device=fs.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=cfg.lr)
    for _ in range(cfg.steps):
        logits = fs @ w + b  # (B, N*K, N)
        loss = F.cross_entropy(logits.flatten(0, 1), task.y_support.flatten(), reduction="sum") / fs.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (fq @ w + b).detach()  # (B, N*Q, N)


def _finetune_all(backbone: Conv4, task: Task, cfg: FinetuneConfig, n_way: int) -> torch.Tensor:
    out = []
    for i in range(task.batch_size):
        net = copy.deepcopy(backbone)
        net.head = torch.nn.Linear(net.embed(task.x_support[i, :1]).shape[-1], n_way).to(task.x_support.device)
        torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.zeros_(net.head.bias)
        _fit(net, net.parameters(), task.select(i), cfg.steps, cfg.lr)
        net.eval()
        with torch.no_grad():
            out.append(net(task.x_query[i]))
    return torch.stack(out)


def save_backbone(net: Conv4, path, **meta) -> None:
    """Save the backbone (not the C-way head) with its size and ``meta`` (command, accuracy, ...)."""
    from .checkpoint import save_checkpoint

    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    hidden = net.features[0][0].out_channels
    batch_norm = isinstance(net.features[0][1], torch.nn.BatchNorm2d)
    save_checkpoint(path, state, hidden=hidden, batch_norm=batch_norm, **meta)


def load_backbone(path=None) -> tuple[Conv4, dict]:
    """Load a backbone saved by `save_backbone` (default: the shipped pretrained one).

    Returns:
        (Conv4 without head, the checkpoint's metadata).
    """
    from .checkpoint import checkpoint_dir, load_checkpoint

    blob = load_checkpoint(path or checkpoint_dir() / PRETRAINED_CHECKPOINT)
    net = Conv4(hidden=int(blob["meta"]["hidden"]), batch_norm=bool(blob["meta"].get("batch_norm", True)))
    net.load_state_dict(blob["state_dict"])
    return net.eval(), blob["meta"]
