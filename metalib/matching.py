"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016; seed §2.2).

The prediction for a query x is an attention-weighted sum of the one-hot support labels:

    p(y | x, D^tr) = sum_k a(x, x_k) y_k,     a(x, x_k) = softmax_k( sim(f(x), g(x_k)) )

with ``sim`` the paper's cosine similarity or the seed's dot product ``g(x_k)^T f(x)``. Cosine
similarities lie in [-1, 1], so the softmax over them can never be confident; as in later metric
learners (Oreshkin et al. 2018, "TADAM") the cosine is multiplied by a learned scale (initialised
at 10; ``scale=None`` gives the paper's unscaled kernel).

Full-context embeddings (``fce=True``, the paper's §2.1.2): g embeds each support example in the
context of the whole support set (a bidirectional LSTM, plus a skip connection), and f reads the
support set with an attention LSTM for ``fce_steps`` steps before the query is embedded.

The model returns log-probabilities ``log p`` (B, M, N) computed stably as a log-sum-exp over each
class's support examples, so ``F.cross_entropy`` on them is the paper's loss. Taught in notebook 03.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .protonet import Embedders
from .tasks import Task

__all__ = ["KERNELS", "attention_logits", "attention", "label_log_probs", "FullContextEmbedding", "MatchingNet"]

KERNELS = ("cosine", "dot")


def attention_logits(z_query: torch.Tensor, z_support: torch.Tensor, kernel: str = "cosine") -> torch.Tensor:
    """Similarities (B, M, S) of queries (B, M, D) to support embeddings (B, S, D)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "cosine":
        z_query, z_support = F.normalize(z_query, dim=-1), F.normalize(z_support, dim=-1)
    return z_query @ z_support.transpose(-1, -2)  # (B, M, S)


def attention(z_query: torch.Tensor, z_support: torch.Tensor, kernel: str = "cosine") -> torch.Tensor:
    """Attention weights a(x, x_k): a softmax over the support set, (B, M, S), rows sum to 1."""
    return attention_logits(z_query, z_support, kernel).softmax(-1)


def label_log_probs(scores: torch.Tensor, y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """log p(y = n | x) = log sum_k softmax_k(scores)[k] [y_k = n], stably: (B, M, S) -> (B, M, N).

    Equal to ``log(attention @ one_hot(y_support))`` without underflow: a log-sum-exp over the support
    examples of each class minus the log-sum-exp over all of them.
    """
    onehot = F.one_hot(y_support, n_way).to(scores.dtype)  # (B, S, N)
    if bool((onehot.sum(-2) == 0).any()):  # log p = -inf for that class, and NaN gradients everywhere
        raise ValueError(f"a class in 0..{n_way - 1} has no support example; every class needs >= 1 "
                         f"(or pass the n_way the labels actually use)")
    masked = scores.unsqueeze(-1) + torch.log(onehot).unsqueeze(1)  # (B, M, S, N), -inf off-class
    return torch.logsumexp(masked, dim=2) - torch.logsumexp(scores, dim=-1, keepdim=True)  # (B, M, N)


class FullContextEmbedding(nn.Module):
    """The paper's g (BiLSTM over the support set) and f (attention LSTM reading it), on embeddings."""

    def __init__(self, dim: int, steps: int = 5):
        super().__init__()
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(dim, dim)
        self.steps = steps

    def support(self, z: torch.Tensor) -> torch.Tensor:
        """g(x_i) = forward state + backward state + g'(x_i): (B, S, D) -> (B, S, D)."""
        out, _ = self.support_lstm(z)  # (B, S, 2D)
        fwd, bwd = out.chunk(2, dim=-1)
        return z + fwd + bwd

    def query(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f(x) after ``steps`` attention-LSTM steps over the support embeddings g: (B, M, D) -> (B, M, D).

        h_hat, c = LSTM(f'(x), h + r, c); h = h_hat + f'(x); r = sum_i softmax(h.g_i) g_i. The paper
        concatenates [h, r] as the LSTM state; summing them keeps the state size D (as most re-implementations).
        """
        B, M, D = z.shape
        x = z.reshape(B * M, D)  # (B*M, D)
        h, c = torch.zeros_like(x), torch.zeros_like(x)
        r = torch.zeros_like(x)
        for _ in range(self.steps):
            h_hat, c = self.query_cell(x, (h + r, c))
            h = h_hat + x  # (B*M, D)
            a = (h.reshape(B, M, D) @ g.transpose(1, 2)).softmax(-1)  # (B, M, S)
            r = (a @ g).reshape(B * M, D)  # (B*M, D)
        return h.reshape(B, M, D)


class MatchingNet(Embedders):
    """A Matching Network on Conv-4 embeddings.

    Args:
        kernel: "cosine" (paper) or "dot" (seed).
        hidden: Conv-4 filters per block (embedding size for 28x28 images).
        separate_support: a second Conv-4 for the support set (seed's g); default: shared.
        fce: full-context embeddings (see the module docstring).
        scale: initial value of the learned multiplier of cosine similarities; None for the unscaled
            kernel. Ignored for "dot" (the seed's kernel is used as is).

    ``forward(task)`` returns log-probabilities (B, N*Q, N); ``embed(x)`` the query embedding f'(x) of
    images (..., 1, 28, 28) in [0, 1] (before full-context embedding, which needs a support set).
    """

    def __init__(self, kernel: str = "cosine", hidden: int = 64, separate_support: bool = False,
                 fce: bool = False, scale: float | None = 10.0, fce_steps: int = 5):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        super().__init__(hidden, separate_support)
        self.kernel = kernel
        self.fce = FullContextEmbedding(hidden, fce_steps) if fce else None
        learn = kernel == "cosine" and scale is not None
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log()) if learn else None

    def forward(self, task: Task, n_way: int | None = None) -> torch.Tensor:
        n_way = n_way or int(task.y_support.max()) + 1
        zs, zq = self.embed_support(task.x_support), self.embed(task.x_query)  # (B, S, D), (B, M, D)
        if self.fce is not None:
            zs = self.fce.support(zs)
            zq = self.fce.query(zq, zs)
        scores = attention_logits(zq, zs, self.kernel)  # (B, M, S)
        if self.log_scale is not None:
            scores = scores * self.log_scale.exp()
        return label_log_probs(scores, task.y_support, n_way)  # (B, M, N)
