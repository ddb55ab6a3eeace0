"""Networks: the Conv-4 backbone of the few-shot papers, and an MLP.

Conv-4 (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017): four blocks of
[3x3 conv with 64 filters, BatchNorm, ReLU, 2x2 max-pool]; a 28x28 input becomes a 64-d
embedding (28 -> 14 -> 7 -> 3 -> 1). Both nets are ordinary modules and can be used
functionally with ``torch.func.functional_call(net, params, x)`` (MAML, notebook 05).

Taught in notebook 01 (baselines) and notebook 04 (Prototypical Networks).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Conv4", "MLP", "conv_block"]


def conv_block(c_in: int, c_out: int, batch_norm: bool = True, running_stats: bool = True,
               pool: bool = True) -> nn.Sequential:
    """3x3 conv (padding 1) -> BatchNorm (optional) -> ReLU -> 2x2 max-pool (unless ``pool=False``).

    ``running_stats=False``: BatchNorm always normalises with the statistics of the batch it sees
    (no buffers, no hidden state; MAML's transductive BatchNorm, notebook 05).
    """
    norm = nn.BatchNorm2d(c_out, track_running_stats=running_stats) if batch_norm else nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), norm, nn.ReLU(inplace=False),
                         nn.MaxPool2d(2) if pool else nn.Identity())


class Conv4(nn.Module):
    """Conv-4 embedding network, optionally followed by a linear classification head.

    Args:
        in_channels: 1 for Omniglot.
        hidden: filters per block (64 in the papers).
        n_classes: if given, add a linear head producing that many logits.
        batch_norm: False drops BatchNorm (for nets trained on a handful of images, or
            vectorised over tasks with ``torch.func.vmap``).
        running_stats: False: BatchNorm keeps no running statistics and always uses the batch's
            (MAML, `metalib.maml`: each task is normalised by its own statistics).
        final_pool: False drops the last block's max-pool, so a 28x28 input keeps a 3x3 map and the
            embedding is hidden x 9 (576-d): where on the character a stroke feature fired survives.

    Shapes:
        input (..., C, H, W) with any number of leading dims; output (..., hidden * h' * w') (64 for
        28x28) or (..., n_classes).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, n_classes: int | None = None,
                 batch_norm: bool = True, running_stats: bool = True, final_pool: bool = True):
        super().__init__()
        self.features = nn.Sequential(conv_block(in_channels, hidden, batch_norm, running_stats),
                                      *(conv_block(hidden, hidden, batch_norm, running_stats) for _ in range(2)),
                                      conv_block(hidden, hidden, batch_norm, running_stats, pool=final_pool))
        if n_classes and not final_pool:
            raise ValueError("the linear head takes the pooled hidden-d features: use final_pool=True with n_classes")
        self.head = nn.Linear(hidden, n_classes) if n_classes else None
        self.out_dim = n_classes or hidden * (1 if final_pool else 9)  # for 28x28 inputs

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone features: (..., C, H, W) -> (..., hidden * h' * w')."""
        lead = x.shape[:-3]
        z = self.features(x.reshape(-1, *x.shape[-3:]))  # (prod(lead), hidden, h', w')
        return z.flatten(1).reshape(*lead, -1)  # (..., hidden * h' * w')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        return self.head(z) if self.head is not None else z


class MLP(nn.Module):
    """Fully connected network, e.g. ``MLP(1, [40, 40], 1)`` for sinusoid regression (MAML).

    ``activation`` defaults to ReLU (the MAML paper); notebook 06 uses ``nn.Tanh`` so that the
    loss is smooth and finite differences of the MAML gradient never straddle a kink.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
