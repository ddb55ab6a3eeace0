"""Judge of notebook 04 (Prototypical Networks: prototypes, their logits, two derivations), checked
outside the student's process.

The public probes use the public tests' inputs; the hidden ones draw theirs (sizes, dtypes, labels,
seeds, K and r, N) when grading starts. Expected values come from `metalib.protonet` in the
grader's process (the notebook's ProtoNet uses it, so ``prototypes`` and ``similarity_logits`` are
guarded, not hidden: they raise only while the probes run, `guard`); gradients
are taken in the sandbox and compared outside.
"""
from __future__ import annotations

import random

from ..judge import Judge, Probe
from .common import HELPERS, number_probe, numbers, tensors

HEAD = HELPERS + "import torch\nG = lambda seed: torch.Generator().manual_seed(seed)\n"


def _invariances(got, expected) -> None:
    if not isinstance(got, dict):
        raise AssertionError("proto_logits' results did not come back")
    if got.get("cosine") != "ValueError":
        outcome = got.get("cosine")
        raise AssertionError("proto_logits(..., 'cosine') should raise ValueError, "
                             + ("returned" if outcome == "nothing" else f"raised {outcome}"))
    tensors("logits (shifted queries and prototypes; dot of 3 z)", atol=1e-9, rtol=1e-9, dtype=True, skip=("cosine",))(
        got, expected)


def _logits_sizes(rng: random.Random, dtype: str, n: int) -> list:
    return [(rng.randint(1, 4), rng.randint(1, 80), rng.randint(2, 20), rng.randint(1, 64), dtype) for _ in range(n)]


def _metalib(seed: int, sizes: list) -> str:
    return HEAD + (f"g = G({seed})\nresult = []\n"
                   f"for B, M, N, D, dtype in {sizes!r}:\n"
                   "    dtype = getattr(torch, dtype)\n"
                   "    z, c = torch.randn(B, M, D, generator=g, dtype=dtype), torch.randn(B, N, D, generator=g, dtype=dtype)\n"
                   "    result.append({'euclidean': proto_logits(z, c, 'euclidean'), 'dot': proto_logits(z, c, 'dot'),\n"
                   "                   'default (euclidean)': proto_logits(z, c)})\n")


def make_probes(rng: random.Random) -> list[Probe]:
    b, s, n, d = rng.randint(1, 3), rng.randint(20, 30), rng.randint(3, 8), rng.randint(16, 64)
    n1, n2 = rng.randint(5, 20), rng.randint(2, 4)
    f32, f64 = _logits_sizes(rng, "float32", 2), _logits_sizes(rng, "float64", 2)
    ks = [(rng.randint(1, 3), round(rng.uniform(0.1, 3), 4)), (rng.randint(4, 20), round(rng.uniform(0.1, 5), 4)),
          (rng.randint(20, 100), round(rng.uniform(0.01, 1), 4))]
    ways = [(rng.randint(2, 6),), (rng.randint(7, 20),), (rng.randint(21, 100),)]
    return [
        # q1: prototypes
        Probe("q1", "test_prototypes_hand_computed", False, HEAD + (
            "z = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]]])\ny = torch.tensor([[0, 0, 1, 1]])\n"
            "result = prototypes(z, y, 2)\n"), check=tensors("prototypes (class 0: mean (1, 0), class 1: mean (0, 3))")),
        Probe("q1", "test_prototypes_shuffled_support", False, HEAD + (
            "g = G(0)\nB, N, K, D = 3, 4, 3, 5\nz = torch.randn(B, N * K, D, generator=g)\n"
            "y = torch.stack([torch.arange(N).repeat(K)[torch.randperm(N * K, generator=g)] for _ in range(B)])\n"
            "perm = torch.randperm(N * K, generator=g)\n"
            "result = {'prototypes': prototypes(z, y, N), 'after reordering the support set': prototypes(z[:, perm], y[:, perm], N)}\n"),
              check=tensors("prototypes of shuffled support labels, shape (3, 4, 5):")),
        Probe("q1", "test_prototypes_match_metalib_unequal_counts_float64", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\nB, S, N, D = {b}, {s}, {n}, {d}\n"
            "z = torch.randn(B, S, D, generator=g, dtype=torch.float64)\n"
            "y = torch.cat([torch.arange(N).expand(B, N), torch.randint(0, N, (B, S - N), generator=g)], 1)  # unequal counts\n"
            "y = y[:, torch.randperm(S, generator=g)]\nresult = prototypes(z, y, N)\n"),
              check=tensors("prototypes (float64, unequal class counts)", atol=1e-12, rtol=1e-10, dtype=True)),
        Probe("q1", "test_prototypes_one_shot_and_gradient", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\n"
            f"order = torch.randperm({n1}, generator=g)\nz = torch.randn(1, {n1}, 3, generator=g)\n"
            f"z2 = torch.randn(4, {n2 * (n2 + 1) // 2}, 2, generator=g, requires_grad=True)\n"
            f"y2 = torch.arange({n2}).repeat_interleave(torch.arange(1, {n2 + 1}))\n"
            "y2 = y2[torch.randperm(len(y2), generator=g)].expand(4, len(y2))\n"
            f"out2 = prototypes(z2, y2, {n2})\n"
            "grad = torch.autograd.grad(out2.sum(), z2, allow_unused=True)[0] if isinstance(out2, torch.Tensor) and out2.requires_grad else None\n"
            f"result = {{'1-shot prototypes': prototypes(z, order[None], {n1}), 'gradient of sum(prototypes) w.r.t. z_support (1 / class count)': grad}}\n"),
              check=tensors("prototypes:")),
        # q2: logits
        Probe("q2", "test_proto_logits_hand_computed", False, HEAD + (
            "protos = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])\nz = torch.tensor([[[1.0, 1.0]]])\n"
            "result = {'euclidean': proto_logits(z, protos, 'euclidean'), 'dot': proto_logits(z, protos, 'dot')}\n"),
              check=tensors("logits of (1, 1):")),
        Probe("q2", "test_proto_logits_match_a_loop", False, HEAD + (
            "g = G(0)\nB, M, N, D = 2, 7, 3, 5\nz, c = torch.randn(B, M, D, generator=g), torch.randn(B, N, D, generator=g)\n"
            "result = {s: proto_logits(z, c, s) for s in ('euclidean', 'dot')}\n"),
              check=tensors("logits, shape (2, 7, 3):", atol=1e-4, rtol=1e-4)),
        Probe("q2", "test_proto_logits_match_metalib", True, _metalib(rng.randrange(10**6), f32),
              check=tensors(f"float32 logits for (B, M, N, D) in {[x[:4] for x in f32]}", atol=1e-3, rtol=1e-3, dtype=True)),
        Probe("q2", "test_proto_logits_match_metalib_float64", True, _metalib(rng.randrange(10**6), f64),
              check=tensors(f"float64 logits for (B, M, N, D) in {[x[:4] for x in f64]}", atol=1e-9, rtol=1e-9, dtype=True)),
        Probe("q2", "test_proto_logits_invariances_and_errors", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\n"
            f"z, c = torch.randn(2, {rng.randint(3, 9)}, 4, generator=g, dtype=torch.float64), "
            f"torch.randn(2, {rng.randint(2, 6)}, 4, generator=g, dtype=torch.float64)\n"
            "shift = torch.randn(4, generator=g, dtype=torch.float64)\n"
            "result = {'euclidean after shifting queries and prototypes together': proto_logits(z + shift, c + shift, 'euclidean'),\n"
            "          'dot of 3 z': proto_logits(3 * z, c, 'dot'), 'cosine': _raises(proto_logits, z, c, 'cosine')}\n"),
              check=_invariances),
        # q3, q4: derivations
        Probe("q3", "test_excess_sq_distance_example", False, number_probe("excess_sq_distance", [(3, 2.0)]),
              check=numbers("excess_sq_distance", [(3, 2.0)], lambda e: 1e-6,
                            lambda a, g, e: "for K = 3 points and r = 2 the excess is 12 (the mean is the unique "
                                            "minimiser; check your expansion)")),
        Probe("q3", "test_excess_sq_distance_against_points", True, number_probe("excess_sq_distance", ks),
              check=numbers("excess_sq_distance", ks, lambda e: 1e-6 * max(1.0, e),
                            lambda a, g, e: "the excess grows with the number of points and with the square of r: "
                                            "expand |z_k - c|^2 around the mean of the points")),
        Probe("q4", "test_p_true_at_zero_scale_four_way", False, number_probe("p_true_at_zero_scale", [(4,)]),
              check=numbers("p_true_at_zero_scale", [(4,)], lambda e: 1e-6,
                            lambda a, g, e: "on 4-way tasks: what is the softmax of 4 equal logits?")),
        Probe("q4", "test_p_true_at_zero_scale_more_ways", True, number_probe("p_true_at_zero_scale", ways),
              check=numbers("p_true_at_zero_scale", ways, lambda e: 1e-6,
                            lambda a, g, e: "with alpha -> 0 every dot-product logit alpha c_y.z goes to 0")),
    ]


def references() -> dict:
    from ... import protonet as pn

    def proto_logits(z_query, protos, similarity="euclidean"):
        return pn.similarity_logits(z_query, protos, similarity)

    return {"prototypes": pn.prototypes, "proto_logits": proto_logits,
            "excess_sq_distance": lambda k, r: k * r ** 2, "p_true_at_zero_scale": lambda n: 1 / n}


JUDGE = Judge("04_prototypical_networks", make_probes, references,
              guarded={"metalib.protonet": ("prototypes", "similarity_logits")})
