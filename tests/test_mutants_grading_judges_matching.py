"""Unit tests for `metalib.grading.judges.matching` (notebook 03's judge).

`make mutants` (tools/mutants.py grading/ --only 'metalib.grading.judges.matching.*') showed the
judge's probe snippets (`_attention`, `_predict`, the inline ones), `_differentiable`'s messages and
tolerances, the ranges `make_probes` draws from, each probe's check (its name, tolerance, hint) and
the references untested outside full notebook runs. Each test checks against an exact expected
string or message, or a value computed by hand.
"""
from __future__ import annotations

import math

import pytest
import torch

from metalib.grading.judges import common
from metalib.grading.judges import matching as mt
from judge_fakes import RecordingRng as _Recording, fails as _fails  # noqa: E402


def test_snippets():
    assert mt._attention("M\n") == mt.HEAD + "M\nresult = {k: attention_weights(z_q, z_s, k) for k in ('dot', 'cosine')}\n"
    assert mt._attention("M\n", ("dot",)) == mt.HEAD + "M\nresult = {k: attention_weights(z_q, z_s, k) for k in ('dot',)}\n"
    assert mt._predict("M\n") == mt.HEAD + "M\nresult = matching_predict(attn, y_support, n)\n"


def test_differentiable():
    p = torch.tensor([[[0.25, 0.75]]], dtype=torch.float64)
    gr = torch.tensor([[[0.5, -0.5, 0.0]]], dtype=torch.float64)
    e = {"p": p, "grad": gr}
    mt._differentiable({"p": p * (1 + 0.9e-8), "grad": gr * (1 + 0.9e-8)}, e)
    with pytest.raises(AssertionError, match="^probabilities differs"):
        mt._differentiable({"p": p * (1 + 1.1e-8), "grad": gr}, e)
    with pytest.raises(AssertionError, match="^d log p / d scores differs"):
        mt._differentiable({"p": p, "grad": gr * (1 + 1.1e-8)}, e)
    z = {"p": torch.zeros(2, dtype=torch.float64), "grad": gr}
    mt._differentiable({**z, "p": torch.full((2,), 0.9e-10, dtype=torch.float64)}, z)   # atol 1e-10
    with pytest.raises(AssertionError, match="^probabilities differs"):
        mt._differentiable({**z, "p": torch.full((2,), 1.1e-10, dtype=torch.float64)}, z)
    gz = {"p": p, "grad": torch.tensor([0.0, 1.0], dtype=torch.float64)}
    mt._differentiable({"p": p, "grad": torch.tensor([0.9e-10, 1.0], dtype=torch.float64)}, gz)
    with pytest.raises(AssertionError, match="^d log p / d scores differs"):
        mt._differentiable({"p": p, "grad": torch.tensor([1.1e-10, 1.0], dtype=torch.float64)}, gz)
    _fails(mt._differentiable, {"p": p.float(), "grad": gr}, e,
           "probabilities should keep the dtype torch.float64, got torch.float32")
    _fails(mt._differentiable, None, e, f"probabilities is None: {common.NOTHING}")
    _fails(mt._differentiable, {"grad": gr}, e, f"probabilities is None: {common.NOTHING}")
    back = "the probabilities must back-propagate into attn"
    for grad in (None, gr.tolist(), torch.zeros(3, dtype=torch.float64), torch.nn.Parameter(gr.clone())):
        _fails(mt._differentiable, {"p": p, "grad": grad}, e, back)
    _fails(mt._differentiable, {"p": p}, e, back)
    mt._differentiable({"p": p, "grad": -gr}, {"p": p, "grad": -gr})      # a negative gradient is fine


def test_probes_draw_their_inputs_as_documented():
    rng = _Recording(8)
    probes = mt.make_probes(rng)
    v = [c[-1] for c in rng.calls]
    assert [c[:-1] for c in rng.calls] == [
        ("randint", 2, 4), ("randint", 3, 9), ("randint", 5, 15), ("randint", 4, 20), ("randint", 10, 30),
        ("randint", 16, 64), ("randint", 2, 5), ("randint", 3, 8), ("randint", 5, 20), ("randint", 1, 4),
        ("randint", 4, 8), ("randint", 2, 3), ("randint", 3, 8), ("randint", 10, 30), ("randint", 50, 200),
        ("randrange", 10**6), ("uniform", 0.5, 3), ("randrange", 10**6), ("randrange", 10**6), ("randrange", 10**6),
        ("randrange", v[11])]
    b, m, s, d, ls, ld, bp, mp, np_, kp, sd, nd = v[:12]
    sizes = [(1,), (v[12],), (v[13],), (v[14],)]
    head = mt.HEAD
    names = "result = _names(grid_trends())\n"
    assert [(p.question, p.name, p.hidden, p.code) for p in probes] == [
        ("q1", "test_attention_by_hand", False, mt._attention(
            "z_q = torch.tensor([[[1.0, 0.0]]])\nz_s = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])\n")),
        ("q1", "test_attention_matches_metalib", False, mt._attention(
            "g = G(0)\nz_q, z_s = torch.randn(2, 4, 6, generator=g), torch.randn(2, 5, 6, generator=g)\n")),
        ("q1", "test_attention_against_a_loop", True, mt._attention(
            f"g = G({v[15]})\nz_q, z_s = torch.randn({b}, {m}, {d}, generator=g), torch.randn({b}, {s}, {d}, "
            f"generator=g) * {round(v[16], 3)}\n")),
        ("q1", "test_attention_other_sizes_and_large_values", True, head + (
            f"g = G({v[17]})\n"
            f"z_q, z_s = torch.randn(1, 1, {ld}, generator=g) * 100, torch.randn(1, {ls}, {ld}, generator=g) * 100\n"
            f"scale = torch.rand(1, {ls}, 1, generator=g) * 5 + 0.1    # stretch each support vector\n"
            "result = {'dot': attention_weights(z_q, z_s, 'dot'), 'cosine': attention_weights(z_q, z_s, 'cosine'),\n"
            "          'cosine of stretched support vectors': attention_weights(z_q, z_s * scale, 'cosine'),\n"
            "          'dot of small vectors': attention_weights(z_q / 100, z_s / 100, 'dot'),\n"
            "          'dot of small stretched vectors': attention_weights(z_q / 100, z_s * scale / 100, 'dot')}\n")),
        ("q2", "test_two_classes_by_hand", False, mt._predict(
            "attn = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]])\ny_support = torch.tensor([[0, 1, 0]])\nn = 2\n")),
        ("q2", "test_prediction_matches_metalib", False, mt._predict(
            "g = G(0)\nB, M, N, K = 2, 6, 3, 2\nscores = torch.randn(B, M, N * K, generator=g)\n"
            "y_support = torch.arange(N).repeat_interleave(K).expand(B, N * K)\nattn, n = scores.softmax(-1), N\n")),
        ("q2", "test_prediction_shuffled_labels_against_a_loop", True, mt._predict(
            f"g = G({v[18]})\nB, M, N, K = {bp}, {mp}, {np_}, {kp}\n"
            "scores = torch.randn(B, M, N * K, generator=g)\n"
            "y_support = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(B)])  # any order\n"
            "attn, n = scores.softmax(-1), N\n")),
        ("q2", "test_prediction_is_differentiable", True, head + (
            f"g = G({v[19]})\n"
            f"scores = torch.randn(1, 1, {sd}, generator=g, dtype=torch.float64, requires_grad=True)\n"
            f"y_support = (torch.randperm({sd}, generator=g) % {nd})[None]\n"
            f"p = matching_predict(scores.softmax(-1), y_support, {nd})\n"
            f"grad = torch.autograd.grad(p[0, 0, {v[20]}].log(), scores, allow_unused=True)[0] "
            "if isinstance(p, torch.Tensor) and p.requires_grad else None\n"
            "result = {'p': p.detach() if isinstance(p, torch.Tensor) else p, 'grad': grad}\n")),
        ("q3", "test_max_unscaled_attention_two_examples", False, common.number_probe("max_unscaled_attention", [(2,)])),
        ("q3", "test_max_unscaled_attention_more_examples", True, common.number_probe("max_unscaled_attention", sizes)),
        ("q4", "test_grid_trends_is_a_set_of_statements", False, common.HELPERS + names),
        ("q4", "test_grid_trends_is_right", True, common.HELPERS + names)]
    check = {p.name: p.check for p in probes}
    assert check["test_prediction_is_differentiable"] is mt._differentiable
    x = torch.tensor([[0.5, 0.5]])
    for name, prefix in (("test_attention_by_hand", "attention of the example by hand dot"),
                         ("test_attention_matches_metalib", "attention, shape (2, 4, 5) dot"),
                         ("test_attention_against_a_loop", f"attention, shape ({b}, {m}, {s}) dot"),
                         ("test_attention_other_sizes_and_large_values",
                          f"attention with large embeddings (use softmax, not exp/sum), S={ls}, D={ld}: dot")):
        check[name]({"dot": x + 0.9e-5}, {"dot": x})      # within atol 1e-5 + rtol 1e-5 * 0.5
        with pytest.raises(AssertionError) as err:
            check[name]({"dot": x + 1.6e-5}, {"dot": x})
        assert str(err.value).startswith(prefix + " differs"), str(err.value)
    _fails(check["test_attention_other_sizes_and_large_values"], {"dot": torch.tensor([[float("nan"), 0.5, 1.0]])},
           {"dot": x}, f"attention with large embeddings (use softmax, not exp/sum), S={ls}, D={ld}: dot has 1 NaN/inf "
                       "entries out of 3")
    for name, prefix in (("test_two_classes_by_hand", "probabilities of the 2-class example"),
                         ("test_prediction_matches_metalib", "probabilities, shape (2, 6, 3)"),
                         ("test_prediction_shuffled_labels_against_a_loop",
                          f"probabilities (labels in a shuffled order), shape ({bp}, {mp}, {np_})")):
        check[name](x.double() + 0.9e-5, x)
        with pytest.raises(AssertionError) as err:
            check[name](x + 1.6e-5, x)
        assert str(err.value).startswith(prefix + " differs"), str(err.value)


def test_number_and_set_checks():
    rng = _Recording(1)
    check = {p.name: p.check for p in mt.make_probes(rng)}
    v = [c[-1] for c in rng.calls]
    two = check["test_max_unscaled_attention_two_examples"]
    e = math.e / (math.e + 1 / math.e)
    two([e + 0.99e-4], [e])
    _fails(two, [e + 1.01e-4], [e], f"max_unscaled_attention(2) = {e + 1.01e-4:.6g}: with 2 support examples: "
                                    "softmax of the cosines (1, -1) gives the first e / (e + 1/e)")
    more = check["test_max_unscaled_attention_more_examples"]
    es = [0.5, 0.4, 0.3, 0.2]
    more([0.5, 0.4, 0.3 - 0.99e-4, 0.2], es)
    _fails(more, [0.5, 0.4, 0.3 - 1.01e-4, 0.2], es, f"max_unscaled_attention({v[13]}) = {0.3 - 1.01e-4:.6g}: the "
                                                     f"weight is largest when its cosine is 1 and all {v[13] - 1} "
                                                     "others are -1")
    pub, right = check["test_grid_trends_is_a_set_of_statements"], check["test_grid_trends_is_right"]
    e = {"type": "set", "items": ["more_shots_help", "more_ways_hurt"]}
    pub({"type": "set", "items": ["more_shots_hurt", "more_ways_help"]}, e)
    right(e, e)
    _fails(pub, {"type": "set", "items": ["more_shots_help", "more_shots_hurt"]}, e, "more shots cannot both help and hurt")
    _fails(pub, {"type": "set", "items": ["more_ways_help", "more_ways_hurt"]}, e, "more ways cannot both help and hurt")
    _fails(pub, {"type": "set", "items": ["fewer"]}, e, "['fewer'] are not among the names ['more_shots_help', "
                                                        "'more_shots_hurt', 'more_ways_help', 'more_ways_hurt']")
    _fails(pub, {"type": "list", "items": []}, e, "grid_trends() should return a set of names, got list")
    _fails(right, {"type": "tuple", "items": []}, e, "grid_trends() should return a set of names, got tuple")
    _fails(right, {"type": "set", "items": ["more_shots_help", "more_shots_hurt"]}, e,
           "more shots cannot both help and hurt")
    _fails(right, {"type": "set", "items": ["more_ways_help", "more_ways_hurt"]}, e, "more ways cannot both help and hurt")
    _fails(right, {"type": "set", "items": ["more_shots_help"]}, e,
           "more shots add more terms of the right class to the attention sum (evidence); more ways add more "
           "competitors for the attention (a harder task)")


def test_references():
    refs = mt.references()
    from metalib import matching as mm
    assert refs["attention_weights"] is mm.attention
    assert refs["grid_trends"]() == {"more_shots_help", "more_ways_hurt"}
    assert refs["max_unscaled_attention"](1) == 1.0
    assert refs["max_unscaled_attention"](3) == pytest.approx(math.e / (math.e + 2 / math.e), rel=1e-15)
    attn = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]], dtype=torch.float64)
    p = refs["matching_predict"](attn, torch.tensor([[0, 1, 0]]), 2)
    torch.testing.assert_close(p, torch.tensor([[[0.8, 0.2], [0.4, 0.6]]], dtype=torch.float64))
    p3 = refs["matching_predict"](attn, torch.tensor([[2, 1, 0]]), 3)
    torch.testing.assert_close(p3, torch.tensor([[[0.3, 0.2, 0.5], [0.3, 0.6, 0.1]]], dtype=torch.float64))
    assert mt.JUDGE.assignment == "03_matching_networks" and mt.JUDGE.make_probes is mt.make_probes
    assert mt.JUDGE.references is mt.references and mt.JUDGE.unavailable == {"metalib.matching": ("attention",)}
