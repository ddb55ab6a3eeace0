"""Forward passes batched over tasks, each task with its own parameters (MAML's "batched" strategy).

In MAML's inner loop every task of a meta-batch gets its own adapted parameters θ_i, so the T
tasks cannot share one ordinary forward pass. `batched_functional(model)` returns
``bfmodel(params, x)`` where every parameter has a leading task dimension T (shape (T, *p.shape))
and ``x`` is (T, n, ...): it runs all T tasks at once.

* `Conv4`: the T tasks' channels are stacked, task-major, into one image batch of T·C channels,
  and each 3x3 convolution is one *grouped* convolution with ``groups=T`` (task i's filters see only
  task i's channels). BatchNorm over that layout normalises each (task, channel) pair with its own
  statistics, so the statistics are per task, like the per-task loop, never mixed across tasks.
* `MLP`: each linear layer is one batched matrix product (``torch.baddbmm``).

The per-task loop in `metalib.maml` is the reference; tests/test_maml.py checks that both give the
same meta-gradient (1e-5 in float32, 1e-10 in float64). Taught in notebook 05.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .nets import MLP, Conv4

__all__ = ["batched_functional", "fast_functional", "supports_batched"]

BFModel = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def supports_batched(model: nn.Module) -> bool:
    """True for the modules `batched_functional` knows (Conv4 and MLP)."""
    return isinstance(model, (Conv4, MLP))


def batched_functional(model: nn.Module) -> BFModel:
    """``bfmodel(params, x)``: ``model`` run on T tasks at once, params (T, ...) and x (T, n, ...).

    Raises:
        TypeError: a module other than `Conv4` or `MLP` (use the "loop" or "vmap" strategy).
        ValueError: a Conv4 whose BatchNorm keeps running statistics (hidden state that a
            batched pass cannot update per task): build it with ``Conv4(..., running_stats=False)``.
    """
    if isinstance(model, Conv4):
        norms = [block[1] for block in model.features]
        if any(isinstance(m, nn.BatchNorm2d) and m.track_running_stats for m in norms):
            raise ValueError("the batched strategy needs BatchNorm without running statistics: build the "
                             "model with Conv4(..., running_stats=False) (MAML normalises each task by its "
                             "own batch, at training and at test time)")
        return lambda params, x: _conv4(model, params, x)
    if isinstance(model, MLP):
        return lambda params, x: _mlp(model, params, x)
    raise TypeError(f"no batched forward for {type(model).__name__}; use strategy='loop' (any module) "
                    "or strategy='vmap' (any module without BatchNorm running statistics)")


def fast_functional(model: nn.Module) -> BFModel:
    """``fmodel(params, x)`` for one task (no task dimension), through the same code with T = 1.

    For `Conv4` this is faster than ``torch.func.functional_call`` on a CPU (no module swapping, and
    max-pooling before the ReLU, which is the same function on a quarter of the elements); for other
    modules it is ``functional_call``. Used by the "loop" strategy of `metalib.maml_train.MAMLLearner`.
    """
    if not supports_batched(model):
        return lambda params, x: torch.func.functional_call(model, dict(params), (x,))
    bf = batched_functional(model)
    return lambda params, x: bf({n: p.unsqueeze(0) for n, p in params.items()}, x.unsqueeze(0))[0]


def _linear(params: Mapping[str, torch.Tensor], prefix: str, h: torch.Tensor) -> torch.Tensor:
    """h (T, n, in) -> (T, n, out) with weight (T, out, in) and bias (T, out)."""
    w, b = params[prefix + "weight"], params[prefix + "bias"]
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _conv4(model: Conv4, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    T, n = x.shape[:2]
    h = x.transpose(0, 1).reshape(n, T * x.shape[2], *x.shape[3:])  # (n, T*C, H, W), task-major channels
    for i, block in enumerate(model.features):
        w = params[f"features.{i}.0.weight"]  # (T, O, C, 3, 3)
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), params[f"features.{i}.0.bias"].reshape(-1),
                     padding=1, groups=T)  # (n, T*O, H, W)
        if isinstance(block[1], nn.BatchNorm2d):  # per (task, channel) statistics over (n, H, W)
            h = F.batch_norm(h, None, None, params[f"features.{i}.1.weight"].reshape(-1),
                             params[f"features.{i}.1.bias"].reshape(-1), training=True, eps=block[1].eps)
        h = F.relu(F.max_pool2d(h, 2))  # = pool(relu(h)): relu is monotone; 4x fewer elements
    z = h.reshape(n, T, -1).transpose(0, 1)  # (T, n, O*h*w): the same order as Conv4.embed's flatten
    return _linear(params, "head.", z) if model.head is not None else z


def _mlp(model: MLP, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = x  # (T, n, in)
    for i, layer in enumerate(model.net):
        h = _linear(params, f"net.{i}.", h) if isinstance(layer, nn.Linear) else layer(h)
    return h
