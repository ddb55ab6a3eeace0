"""Judge of notebook 02 (black-box meta-learning: the input sequence, the query-only loss, two
predictions), checked outside the student's process.

The public probes use the public tests' inputs; the hidden ones draw theirs (sizes, seeds) when
grading starts. Expected values come from `metalib.blackbox` in the grader's process (the notebook
itself trains and evaluates with it, so ``build_sequence`` and ``query_loss`` are guarded, not hidden:
they raise only while the probes run, `guard`). Shuffles have many right
answers: the judge checks the returned sequences themselves (labels stay with their rows, every order
about equally likely, reproducible from the generator); gradients are taken in the sandbox.
"""
from __future__ import annotations

import itertools
import math
import random

from ..judge import Judge, Probe
from .common import HELPERS, names, nothing, number_probe, numbers, tensors

HEAD = HELPERS + '''import torch

def _pair(out):
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return list(out)
    return None if out is None else type(out).__name__

def _lg(value, logits):
    if not isinstance(value, torch.Tensor):
        return {"value": None if value is None else type(value).__name__, "grad": None}
    grad = torch.autograd.grad(value, logits, allow_unused=True)[0] if value.requires_grad else None
    return {"value": value.detach(), "grad": grad}

G = lambda seed: torch.Generator().manual_seed(seed)
'''


def _seq(out, name: str = "build_sequence's result"):
    import torch

    if out is None:
        raise AssertionError(f"{name} is None: the function returned nothing. Did you finish the exercise "
                             "(replace `...`) and `return` (seq, y_order)?")
    if not isinstance(out, list) or not all(type(t) is torch.Tensor for t in out):
        raise AssertionError("return (seq, y_order): two tensors")
    return out


def _in_order(got, expected) -> None:
    """Without a generator: exactly the library's sequence and labels."""
    import torch

    seq, y_order = _seq(got)
    e_seq, e_y = expected
    tensors("seq (no generator: the given order)")(seq, e_seq)
    if y_order.shape != e_y.shape or not torch.equal(y_order, e_y):
        raise AssertionError("y_order should be the support labels (in the given order without a generator)")


def _keeps_labels(got, expected) -> None:
    import torch

    seq, y_order = _seq(got.get("out") if isinstance(got, dict) else None)
    z_s, y_s, z_q = expected["z_s"], expected["y_s"], expected["z_q"]
    (B, S, D), n = z_s.shape, expected["n"]
    if seq.shape != (B, S + z_q.shape[1], D + n) or y_order.shape != (B, S):
        raise AssertionError(f"seq should have shape {(B, S + z_q.shape[1], D + n)} and y_order {(B, S)}, got "
                             f"{tuple(seq.shape)} and {tuple(y_order.shape)}")
    seq = seq.to(z_s.dtype)
    for b in range(B):
        for t in range(S):
            i = int(((z_s[b] - seq[b, t, :D]).abs().sum(-1)).argmin())   # which support row landed here
            if not torch.allclose(seq[b, t, :D], z_s[b, i]):
                raise AssertionError(f"task {b} position {t} is not a support row")
            if not int(seq[b, t, D:].argmax()) == int(y_s[b, i]) == int(y_order[b, t]):
                raise AssertionError(f"task {b} position {t}: the one-hot label must stay with its image")
            if seq[b, t, D:].sum() != 1:
                raise AssertionError("support labels are one-hot")
    if not torch.all(seq[:, S:, D:] == 0):
        raise AssertionError("query labels must be zero")
    if not torch.allclose(seq[:, S:, :D], z_q):
        raise AssertionError("queries keep their order, after the support rows")
    if torch.equal(seq[:, :S, :D], z_s):
        raise AssertionError("with a generator the support should be shuffled")
    if len({tuple(y_order[b].tolist()) for b in range(B)}) <= 1:
        raise AssertionError("each task should get its own order")


def _uniform(got, expected) -> None:
    import torch

    if not isinstance(got, dict):
        raise AssertionError("build_sequence's results did not come back")
    (seq, y_order), (again, y_again), (other, _) = (_seq(got.get(k)) for k in ("out", "again", "other"))
    B, S, D = expected["B"], expected["S"], expected["D"]
    if seq.shape != (B, S + 1, D + S) or y_order.shape != (B, S):
        raise AssertionError(f"seq should have shape {(B, S + 1, D + S)}, got {tuple(seq.shape)}")
    if not (again.shape == seq.shape and torch.equal(seq, again) and torch.equal(y_order, y_again)):
        raise AssertionError("the same generator seed must give the same sequences: draw every random number "
                             "from `generator`")
    rows = seq[:, :S, 0].round().long()                                                    # which row sits where
    if not (torch.equal(rows, y_order) and torch.equal(seq[:, :S, D:].argmax(-1), y_order)):
        raise AssertionError("each support row must keep its own label, in seq and in y_order")
    counts: dict = {}
    for order in map(tuple, rows.tolist()):
        counts[order] = counts.get(order, 0) + 1
    perms = math.factorial(S)
    if not set(counts) <= set(itertools.permutations(range(S))):
        raise AssertionError("each task's support must be a permutation of its rows")
    mean = B / perms
    if not (len(counts) == perms and 0.6 * mean < min(counts.values()) and max(counts.values()) < 1.4 * mean):
        raise AssertionError(
            f"each of the {perms} orders of {S} support rows should be about equally likely (about {mean:.0f} of {B} "
            f"tasks each); {len(counts)} orders occurred, from {min(counts.values())} to {max(counts.values())} times")
    if other.shape == seq.shape and torch.equal(other, seq):
        raise AssertionError("another seed should give other orders")


def _other_sizes(n: int, d: int):
    return lambda got, expected: _one_task(got, expected, n, d)


def _one_task(got, expected, n: int, d: int) -> None:
    """One task of N = S support rows in a drawn label order, one query: shapes, labels, query last."""
    import torch

    seq, y_order = _seq(got.get("out") if isinstance(got, dict) else None)
    z_q = expected["z_q"]
    if tuple(seq.shape) != (1, n + 1, d + n):
        raise AssertionError(f"seq should have shape (1, {n} + 1, {d} + {n}), got {tuple(seq.shape)}")
    if y_order.shape != (1, n) or not torch.equal(seq[0, :n, d:].argmax(-1), y_order[0]):
        raise AssertionError("the one-hot labels in seq should match y_order")
    if sorted(y_order[0].tolist()) != list(range(n)):
        raise AssertionError(f"y_order should be a permutation of the {n} support labels")
    if not (torch.equal(seq[0, n, :d], z_q[0, 0]) and torch.all(seq[0, n, d:] == 0)):
        raise AssertionError("the query comes last, with its embedding and an all-zero label")


def _no_support_gradient(compare_grad: bool):
    def check(got, expected):
        import torch

        if not isinstance(got, dict):
            raise AssertionError("the loss did not come back")
        nothing(got.get("value"), "query_only_loss")
        if isinstance(got["value"], str):
            raise AssertionError(f"query_only_loss should return a tensor, got {got['value']}")
        tensors("query-only loss")(got["value"], expected["value"])
        grad, s = got.get("grad"), expected["n_support"]
        if type(grad) is not torch.Tensor or grad.shape != expected["grad"].shape:
            raise AssertionError("the loss should be differentiable with respect to the logits")
        if not torch.all(grad[:, :s] == 0):
            raise AssertionError("the support positions must not receive a gradient")
        if not torch.all(grad[:, s:].abs().sum(-1) > 0):
            raise AssertionError("every query position must receive a gradient")
        if compare_grad:
            tensors("d loss / d logits")(grad, expected["grad"])
    return check


def _gradient(seed: int, b: int, t: int, n: int, s: int) -> str:
    return HEAD + (f"g = G({seed})\n"
                   f"logits = torch.randn({b}, {t}, {n}, generator=g, requires_grad=True)\n"
                   f"targets = torch.randint(0, {n}, ({b}, {t}), generator=g)\n"
                   f"result = {{**_lg(query_only_loss(logits, targets, {s}), logits), 'n_support': {s}}}\n")


def make_probes(rng: random.Random) -> list[Probe]:
    bn, bk = rng.randint(2, 6), rng.randint(1, 4)
    in_order = (rng.randint(1, 4), bn, bk, rng.randint(2, 8), rng.randint(1, 6))  # B, N, K, D, M
    n_other, d_other = rng.randint(10, 20), rng.randint(3, 9)
    loss_sizes = [(rng.randint(1, 3), 1, 1, 2), (rng.randint(2, 5), rng.randint(5, 12), rng.randint(5, 16), rng.randint(3, 6)),
                  (rng.randint(1, 3), rng.randint(15, 25), rng.randint(1, 4), rng.randint(15, 20))]
    ns = [(rng.randint(3, 6),), (rng.randint(7, 12),), (rng.randint(15, 50),)]
    # 4800 tasks: about 200 per order (sd 14), so an honest shuffle stays within 0.6-1.4 of it for any seed
    b_uni, d_uni, s1, s2 = 4800, rng.randint(1, 3), rng.randrange(10**6), rng.randrange(10**6)
    return [
        # q1: the sequence
        Probe("q1", "test_sequence_without_shuffle", False, HEAD + (
            "g = G(0)\nz_s, z_q = torch.randn(2, 6, 5, generator=g), torch.randn(2, 4, 5, generator=g)\n"
            "y_s = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, 6)\n"
            "result = _pair(build_sequence(z_s, y_s, z_q, 3))\n"), check=_in_order),
        Probe("q1", "test_shuffle_keeps_labels_with_their_images", False, HEAD + (
            "g = G(1)\nB, N, K, D = 8, 3, 2, 4\n"
            "z_s, z_q = torch.randn(B, N * K, D, generator=g), torch.randn(B, 5, D, generator=g)\n"
            "y_s = torch.arange(N).repeat_interleave(K).expand(B, N * K)\n"
            "result = {'out': _pair(build_sequence(z_s, y_s, z_q, N, G(2))), 'z_s': z_s, 'y_s': y_s, 'z_q': z_q, 'n': N}\n"),
              check=_keeps_labels),
        Probe("q1", "test_sequence_shuffle_is_uniform_and_reproducible", True, HEAD + (
            f"B, S, D = {b_uni}, 4, {d_uni}\n"
            "z_s = torch.arange(S, dtype=torch.float32).view(1, S, 1).expand(B, S, D).contiguous()\n"
            "y_s = torch.arange(S).expand(B, S)\nz_q = torch.zeros(B, 1, D)\n"
            f"result = {{k: _pair(build_sequence(z_s, y_s, z_q, S, G(s))) for k, s in (('out', {s1}), ('again', {s1}), "
            f"('other', {s2}))}}\n"),
              check=lambda got, expected: _uniform(got, {"B": b_uni, "S": 4, "D": d_uni})),
        Probe("q1", "test_sequence_other_sizes", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\n"
            f"z_s, z_q = torch.randn(1, {n_other}, {d_other}, generator=g), torch.randn(1, 1, {d_other}, generator=g)\n"
            f"y_s = torch.randperm({n_other}, generator=g)[None]\n"
            f"result = {{'out': _pair(build_sequence(z_s, y_s, z_q, {n_other}, G({rng.randrange(10**6)}))), 'z_q': z_q}}\n"),
              check=_other_sizes(n_other, d_other)),
        Probe("q1", "test_sequence_in_order_other_sizes", True, HEAD + (
            "B, N, K, D, M = {}\n".format(in_order) +
            f"g = G({rng.randrange(10**6)})\n"
            "z_s, z_q = torch.randn(B, N * K, D, generator=g), torch.randn(B, M, D, generator=g)\n"
            "y_s = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(B)])\n"
            "result = _pair(build_sequence(z_s, y_s, z_q, N))\n"), check=_in_order),
        # q2: the loss on the query positions only
        Probe("q2", "test_query_only_loss_value", False, HEAD + (
            "g = G(0)\nlogits, targets = torch.randn(3, 7, 4, generator=g), torch.randint(0, 4, (3, 7), generator=g)\n"
            "result = query_only_loss(logits, targets, 4)\n"), check=tensors("query-only loss")),
        Probe("q2", "test_no_gradient_at_support_positions", False, _gradient(1, 2, 6, 3, 2),
              check=_no_support_gradient(False)),
        Probe("q2", "test_query_only_loss_matches_metalib", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\nresult = []\n"
            f"for B, S, M, N in {loss_sizes}:\n"
            "    logits, targets = torch.randn(B, S + M, N, generator=g), torch.randint(0, N, (B, S + M), generator=g)\n"
            "    result.append(query_only_loss(logits, targets, S))\n"),
              check=tensors(f"query-only loss for (B, S, M, N) in {loss_sizes}")),
        Probe("q2", "test_query_only_loss_gradient_other_sizes", True,
              _gradient(rng.randrange(10**6), rng.randint(1, 5), (t := rng.randint(4, 12)), rng.randint(2, 8),
                        rng.randint(1, t - 1)), check=_no_support_gradient(True)),
        # q3, q4: predictions
        Probe("q3", "test_plateau_loss_two_way", False, number_probe("plateau_loss", [(2,)]),
              check=numbers("plateau_loss", [(2,)], lambda e: 1e-4,
                            lambda a, g, e: "on 2-way tasks a learner that ignores the support set predicts 1/2 for "
                                            "each class; its cross-entropy is -log(1/2)")),
        Probe("q3", "test_plateau_loss_more_ways", True, number_probe("plateau_loss", ns),
              check=numbers("plateau_loss", ns, lambda e: 1e-4,
                            lambda a, g, e: "with a uniform prediction the probability of the true class is 1/N, "
                                            "and the cross-entropy is minus its log")),
        Probe("q4", "test_sure_to_improve_is_a_set_of_names", False, HELPERS + "result = _names(sure_to_improve())\n",
              check=names("sure_to_improve", {"lstm", "prototype"}, right=False)),
        Probe("q4", "test_sure_to_improve_is_right", True, HELPERS + "result = _names(sure_to_improve())\n",
              check=names("sure_to_improve", {"lstm", "prototype"}, right=True,
                          wrong="not quite: a class mean over more examples is a better estimate for any K, but the "
                                "LSTM was trained only on sequences with one example per class, and nothing "
                                "guarantees what it does with longer ones")),
    ]


def references() -> dict:
    from ... import blackbox as bb

    def build_sequence(z_support, y_support, z_query, n_way, generator=None):
        return bb.build_sequence(z_support, y_support, z_query, n_way, generator)

    def query_only_loss(logits, targets, n_support):
        return bb.query_loss(logits, targets, bb.query_mask(n_support, logits.shape[1] - n_support))

    return {"build_sequence": build_sequence, "query_only_loss": query_only_loss,
            "plateau_loss": lambda n: math.log(n), "sure_to_improve": lambda: {"prototype"}}


JUDGE = Judge("02_black_box", make_probes, references,
              guarded={"metalib.blackbox": ("build_sequence", "query_loss")})
