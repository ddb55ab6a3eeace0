"""Judge of notebook 03 (Matching Networks: attention, the label mixture, two predictions), checked
outside the student's process.

The public probes use the public tests' inputs; the hidden ones draw theirs (sizes, scales, labels,
seeds) when grading starts. Expected values come from `metalib.matching` in the grader's process;
in the sandbox `metalib.matching.attention` raises "not available while grading" (the notebook's
model uses ``attention_logits`` and ``label_log_probs``, which stay available). Gradients are
taken in the sandbox and compared outside.
"""
from __future__ import annotations

import math
import random

from ..judge import Judge, Probe
from .common import HELPERS, names, number_probe, numbers, tensors

HEAD = HELPERS + "import torch\nG = lambda seed: torch.Generator().manual_seed(seed)\n"
STATEMENTS = {"more_shots_help", "more_shots_hurt", "more_ways_help", "more_ways_hurt"}


def _attention(make: str, kernels=("dot", "cosine")) -> str:
    return HEAD + make + f"result = {{k: attention_weights(z_q, z_s, k) for k in {kernels!r}}}\n"


def _predict(make: str) -> str:
    return HEAD + make + "result = matching_predict(attn, y_support, n)\n"


def _differentiable(got, expected) -> None:
    import torch

    tensors("probabilities", atol=1e-10, rtol=1e-8, dtype=True)(got.get("p") if isinstance(got, dict) else None,
                                                                  expected["p"])
    grad = got.get("grad")
    if type(grad) is not torch.Tensor or not grad.abs().sum() > 0:
        raise AssertionError("the probabilities must back-propagate into attn")
    tensors("d log p / d scores", atol=1e-10, rtol=1e-8)(grad, expected["grad"])


def make_probes(rng: random.Random) -> list[Probe]:
    b, m, s, d = rng.randint(2, 4), rng.randint(3, 9), rng.randint(5, 15), rng.randint(4, 20)
    large_s, large_d = rng.randint(10, 30), rng.randint(16, 64)
    bp, mp, np_, kp = rng.randint(2, 5), rng.randint(3, 8), rng.randint(5, 20), rng.randint(1, 4)
    sd, nd = rng.randint(4, 8), rng.randint(2, 3)
    sizes = [(1,), (rng.randint(3, 8),), (rng.randint(10, 30),), (rng.randint(50, 200),)]
    return [
        # q1: attention weights
        Probe("q1", "test_attention_by_hand", False, _attention(
            "z_q = torch.tensor([[[1.0, 0.0]]])\nz_s = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])\n"),
              check=tensors("attention of the example by hand")),
        Probe("q1", "test_attention_matches_metalib", False, _attention(
            "g = G(0)\nz_q, z_s = torch.randn(2, 4, 6, generator=g), torch.randn(2, 5, 6, generator=g)\n"),
              check=tensors("attention, shape (2, 4, 5)")),
        Probe("q1", "test_attention_against_a_loop", True, _attention(
            f"g = G({rng.randrange(10**6)})\n"
            f"z_q, z_s = torch.randn({b}, {m}, {d}, generator=g), torch.randn({b}, {s}, {d}, generator=g) * "
            f"{round(rng.uniform(0.5, 3), 3)}\n"), check=tensors(f"attention, shape ({b}, {m}, {s})")),
        Probe("q1", "test_attention_other_sizes_and_large_values", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\n"
            f"z_q, z_s = torch.randn(1, 1, {large_d}, generator=g) * 100, torch.randn(1, {large_s}, {large_d}, generator=g) * 100\n"
            f"scale = torch.rand(1, {large_s}, 1, generator=g) * 5 + 0.1    # stretch each support vector\n"
            "result = {'dot': attention_weights(z_q, z_s, 'dot'), 'cosine': attention_weights(z_q, z_s, 'cosine'),\n"
            "          'cosine of stretched support vectors': attention_weights(z_q, z_s * scale, 'cosine'),\n"
            "          'dot of small vectors': attention_weights(z_q / 100, z_s / 100, 'dot'),\n"
            "          'dot of small stretched vectors': attention_weights(z_q / 100, z_s * scale / 100, 'dot')}\n"),
              check=tensors(f"attention with large embeddings (use softmax, not exp/sum), S={large_s}, D={large_d}:",
                            finite=True)),
        # q2: the label mixture
        Probe("q2", "test_two_classes_by_hand", False, _predict(
            "attn = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]])\ny_support = torch.tensor([[0, 1, 0]])\nn = 2\n"),
              check=tensors("probabilities of the 2-class example")),
        Probe("q2", "test_prediction_matches_metalib", False, _predict(
            "g = G(0)\nB, M, N, K = 2, 6, 3, 2\nscores = torch.randn(B, M, N * K, generator=g)\n"
            "y_support = torch.arange(N).repeat_interleave(K).expand(B, N * K)\nattn, n = scores.softmax(-1), N\n"),
              check=tensors("probabilities, shape (2, 6, 3)")),
        Probe("q2", "test_prediction_shuffled_labels_against_a_loop", True, _predict(
            f"g = G({rng.randrange(10**6)})\nB, M, N, K = {bp}, {mp}, {np_}, {kp}\n"
            "scores = torch.randn(B, M, N * K, generator=g)\n"
            "y_support = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(B)])  # any order\n"
            "attn, n = scores.softmax(-1), N\n"),
              check=tensors(f"probabilities (labels in a shuffled order), shape ({bp}, {mp}, {np_})")),
        Probe("q2", "test_prediction_is_differentiable", True, HEAD + (
            f"g = G({rng.randrange(10**6)})\n"
            f"scores = torch.randn(1, 1, {sd}, generator=g, dtype=torch.float64, requires_grad=True)\n"
            f"y_support = (torch.randperm({sd}, generator=g) % {nd})[None]\n"
            f"p = matching_predict(scores.softmax(-1), y_support, {nd})\n"
            f"grad = torch.autograd.grad(p[0, 0, {rng.randrange(nd)}].log(), scores, allow_unused=True)[0] "
            "if isinstance(p, torch.Tensor) and p.requires_grad else None\n"
            "result = {'p': p.detach() if isinstance(p, torch.Tensor) else p, 'grad': grad}\n"), check=_differentiable),
        # q3, q4: predictions
        Probe("q3", "test_max_unscaled_attention_two_examples", False, number_probe("max_unscaled_attention", [(2,)]),
              check=numbers("max_unscaled_attention", [(2,)], lambda e: 1e-4,
                            lambda a, g, e: "with 2 support examples: softmax of the cosines (1, -1) gives the first "
                                            "e / (e + 1/e)")),
        Probe("q3", "test_max_unscaled_attention_more_examples", True, number_probe("max_unscaled_attention", sizes),
              check=numbers("max_unscaled_attention", sizes, lambda e: 1e-4,
                            lambda a, g, e: f"the weight is largest when its cosine is 1 and all {a[0] - 1} others "
                                            "are -1")),
        Probe("q4", "test_grid_trends_is_a_set_of_statements", False, HELPERS + "result = _names(grid_trends())\n",
              check=names("grid_trends", STATEMENTS, right=False, both=("shots", "ways"))),
        Probe("q4", "test_grid_trends_is_right", True, HELPERS + "result = _names(grid_trends())\n",
              check=names("grid_trends", STATEMENTS, right=True, both=("shots", "ways"),
                          wrong="more shots add more terms of the right class to the attention sum (evidence); more "
                                "ways add more competitors for the attention (a harder task)")),
    ]


def references() -> dict:
    from ... import matching as mm

    def matching_predict(attn, y_support, n_way):  # p(y = n | x) = sum of the attention on class n's examples
        return mm.label_log_probs(attn.log(), y_support, n_way).exp()

    return {"attention_weights": mm.attention, "matching_predict": matching_predict,
            "max_unscaled_attention": lambda s: math.e / (math.e + (s - 1) / math.e),
            "grid_trends": lambda: {"more_shots_help", "more_ways_hurt"}}


JUDGE = Judge("03_matching_networks", make_probes, references,
              unavailable={"metalib.matching": ("attention",)})
