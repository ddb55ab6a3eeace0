"""Black-box meta-learning: sequence models that read the support set, then classify queries.

Seed §2.1 ("read the training set sequentially, then process new inputs from the task"); the
memory-augmented network of Santoro et al. 2016 (MANN) as set in CS330 homework 1, and the
attention view of SNAIL (Mishra et al. 2018) / in-context learning. Taught in notebook 02.

The input sequence of one task (`build_sequence`):

    [ (z(x_1), onehot(y_1)), ..., (z(x_S), onehot(y_S)) ,  (z(q_1), 0), ..., (z(q_M), 0) ]
      support D^tr: S = N*K pairs in a random order           queries D^ts: label zeroed

where z is an image encoder trained end to end. The loss and the accuracy are taken at query
positions only (`query_mask`, `query_loss`): the support labels are inputs there, so predicting
them would be copying.

Queries are read *in parallel*: each query is appended to the support sequence on its own (the
LSTM continues from the state after the support; the attention mask lets a query see the support
and itself only). A prediction therefore never depends on the other queries of the episode, and
the M queries cost one extra step instead of M sequential ones. `LSTMLearner.forward_sequence` is
tested against the plain "one sequence per query" loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nets import Conv4
from .tasks import Task

__all__ = ["build_sequence", "query_mask", "query_loss", "make_encoder", "BlackBoxLearner",
           "LSTMLearner", "AttentionLearner", "attention_mask"]


def build_sequence(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The black-box learner's input: shuffled (features, one-hot label) support pairs, then queries.

    Args:
        z_support: (B, S, D) support features (or flattened images), S = N*K.
        y_support: (B, S) int64 support labels in 0..N-1.
        z_query: (B, M, D) query features.
        n_way: N, the length of the one-hot label.
        generator: draws one support order per task (``torch.rand(B, S).argsort(1)``);
            None keeps the given order.

    Returns:
        ``(seq, y_order)``: seq (B, S+M, D+N), support rows ``[z, onehot(y)]`` in the drawn order,
        query rows ``[z, 0]``; y_order (B, S) the support labels in that order.
    """
    if z_support.dim() != 3 or z_query.dim() != 3 or y_support.shape != z_support.shape[:2]:
        raise ValueError(f"expected z_support (B, S, D), y_support (B, S), z_query (B, M, D); got "
                         f"{tuple(z_support.shape)}, {tuple(y_support.shape)}, {tuple(z_query.shape)}")
    if int(y_support.max()) >= n_way or int(y_support.min()) < 0:
        raise ValueError(f"support labels must lie in 0..{n_way - 1} (n_way={n_way}), "
                         f"got {int(y_support.min())}..{int(y_support.max())}")
    B, S, D = z_support.shape
    if generator is None:
        perm = torch.arange(S, device=z_support.device).expand(B, S)
    else:
        perm = torch.rand(B, S, generator=generator, device=generator.device).argsort(1).to(z_support.device)
    z_s = z_support.gather(1, perm[..., None].expand(B, S, D))  # (B, S, D) rows in the drawn order
    y_s = y_support.gather(1, perm)  # (B, S) labels follow their rows
    support = torch.cat([z_s, F.one_hot(y_s, n_way).to(z_s.dtype)], dim=-1)  # (B, S, D+N)
    query = F.pad(z_query, (0, n_way))  # (B, M, D+N): zero label
    return torch.cat([support, query], dim=1), y_s


def query_mask(n_support: int, n_query: int, device: str | torch.device | None = None) -> torch.Tensor:
    """(S+M,) bool: True at the query positions, where the loss and the accuracy are taken."""
    return torch.arange(n_support + n_query, device=device) >= n_support


def query_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions where ``mask`` is True.

    Args:
        logits: (B, T, N) one prediction per sequence position.
        targets: (B, T) int64 labels of every position.
        mask: (T,) or (B, T) bool, True where the loss counts (the queries).
    """
    mask = mask.expand(targets.shape)
    if not bool(mask.any()):
        raise ValueError("the mask selects no position; it should be True at the query positions")
    return F.cross_entropy(logits[mask], targets[mask])  # (B*M, N) vs (B*M,)


def make_encoder(kind: str, hidden: int = 32, batch_norm: bool = True) -> tuple[nn.Module, int]:
    """Image encoder and its feature size: "conv" (Conv-4, ``hidden`` filters) or "flat" (784 pixels)."""
    if kind == "conv":
        return Conv4(hidden=hidden, batch_norm=batch_norm), hidden
    if kind == "flat":
        return nn.Flatten(-3), 28 * 28
    raise ValueError(f"encoder must be 'conv' or 'flat', got {kind!r}")


class BlackBoxLearner(nn.Module):
    """Encoder + sequence model; subclasses define ``forward_sequence(seq, n_support)``.

    Args:
        n_way: N (length of the one-hot label and of the output).
        encoder: "conv" or "flat" (see `make_encoder`).
        conv_hidden, batch_norm: Conv-4 width and whether it uses BatchNorm.
    """

    def __init__(self, n_way: int, encoder: str = "conv", conv_hidden: int = 32, batch_norm: bool = True):
        super().__init__()
        self.n_way = n_way
        self.encoder, self.feat_dim = make_encoder(encoder, conv_hidden, batch_norm)

    def forward_sequence(self, seq: torch.Tensor, n_support: int) -> torch.Tensor:
        """(B, S+M, D+N) -> logits (B, S+M, N); query positions read the support only."""
        raise NotImplementedError

    def encode(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the support (B, S, D) and the queries (B, M, D), encoded in one batch."""
        S = task.x_support.shape[1]
        z = self.encoder(torch.cat([task.x_support, task.x_query], 1))  # (B, S+M, D)
        return z[:, :S], z[:, S:]

    def forward(self, task: Task, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of every position (B, S+M, N) and the targets (B, S+M) in sequence order."""
        z_s, z_q = self.encode(task)
        seq, y_order = build_sequence(z_s, task.y_support, z_q, self.n_way, generator)
        return self.forward_sequence(seq, z_s.shape[1]), torch.cat([y_order, task.y_query], 1)

    def predict(self, task: Task, generator: torch.Generator | None = None) -> torch.Tensor:
        """Query logits (B, M, N), for `metalib.evaluate_accuracy`."""
        with torch.no_grad():
            logits, _ = self(task, generator)
        return logits[:, task.x_support.shape[1]:]


class LSTMLearner(BlackBoxLearner):
    """MANN-style learner (Santoro et al. 2016; CS330 HW1): an LSTM reads the sequence.

    Args:
        hidden: LSTM state size; layers: stacked LSTM layers. Other args: `BlackBoxLearner`.
    """

    def __init__(self, n_way: int, hidden: int = 128, layers: int = 1, **enc):
        super().__init__(n_way, **enc)
        self.lstm = nn.LSTM(self.feat_dim + n_way, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_way)

    def forward_sequence(self, seq: torch.Tensor, n_support: int) -> torch.Tensor:
        B, T, _ = seq.shape
        M = T - n_support
        out_s, (h, c) = self.lstm(seq[:, :n_support])  # (B, S, H); h, c (L, B, H)
        start = (h.repeat_interleave(M, dim=1), c.repeat_interleave(M, dim=1))  # (L, B*M, H)
        out_q, _ = self.lstm(seq[:, n_support:].reshape(B * M, 1, -1), start)  # (B*M, 1, H)
        out = torch.cat([out_s, out_q.reshape(B, M, -1)], dim=1)  # (B, S+M, H)
        return self.head(out)  # (B, S+M, N)


def attention_mask(n_support: int, n_query: int, device: str | torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where attention is *blocked*: causal over the support, and each query
    sees the whole support and itself, never another query."""
    T = n_support + n_query
    i = torch.arange(T, device=device)
    allowed = (i[None, :] <= i[:, None]) & ((i[None, :] < n_support) | (i[None, :] == i[:, None]))
    return ~allowed


class AttentionLearner(BlackBoxLearner):
    """SNAIL-like in-context learner: a small causal transformer over the same sequence.

    No positional encoding: apart from the causal mask the support is a set, so the queries'
    predictions barely depend on the support order (with one layer, not at all).

    Args:
        d_model: token width; heads: attention heads; layers: transformer blocks;
        ff: feed-forward width. Other args: `BlackBoxLearner`.
    """

    def __init__(self, n_way: int, d_model: int = 64, heads: int = 4, layers: int = 2, ff: int = 128, **enc):
        super().__init__(n_way, **enc)
        self.embed = nn.Linear(self.feat_dim + n_way, d_model)
        block = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_way)

    def forward_sequence(self, seq: torch.Tensor, n_support: int) -> torch.Tensor:
        mask = attention_mask(n_support, seq.shape[1] - n_support, seq.device)  # (T, T)
        h = self.blocks(self.embed(seq), mask=mask)  # (B, T, d_model)
        return self.head(self.norm(h))  # (B, T, N)
