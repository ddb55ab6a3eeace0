"""Fast tests of notebook 04's judge (`metalib.grading.judges.protonet`), from `make mutants`.

`tools/mutants.py grading/ --only 'metalib.grading.judges.protonet.*'` showed the judge untested
outside the sandboxed grading runs (deselected there, minutes each): which inputs the probes draw and
from which ranges, the probe code run with the references (shapes, dtypes, labels), each check's
name, tolerances and dtype option, the cosine-must-raise check and its messages, the numeric
questions' tolerances and hints, and the references themselves. Here each is compared with values
computed by hand or by plain loops, and with the exact messages.
"""
from __future__ import annotations

import random
import re

import pytest
import torch

from metalib.grading.judge import expected_value, judge_for
from metalib.grading.judges import common
from metalib.grading.judges import protonet as pj
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails, loop_class_means as _loop_means  # noqa: E402


# draws, in order: b s n d n1 n2 | f32 2x(B M N D) | f64 2x(B M N D) | ks | ways | seeds and invariance sizes
_VALUES = (2, 21, 3, 17, 6, 3,
           1, 5, 3, 4, 2, 6, 2, 3,
           3, 4, 2, 5, 1, 2, 4, 6,
           2, 1.5, 5, 0.25, 30, 0.5,
           4, 9, 25,
           11, 12, 13, 14, 15, 5, 3)


def _probes():
    rng = _ScriptedRng(*_VALUES)
    return rng, pj.make_probes(rng)


def _by_name():
    return {p.name: p for p in _probes()[1]}


def _loop_euclid(z, c):
    out = torch.zeros(z.shape[0], z.shape[1], c.shape[1], dtype=torch.float64)
    for b in range(z.shape[0]):
        for m in range(z.shape[1]):
            for n in range(c.shape[1]):
                out[b, m, n] = -sum((float(z[b, m, k]) - float(c[b, n, k])) ** 2 for k in range(z.shape[2]))
    return out


def _loop_dot(z, c):
    out = torch.zeros(z.shape[0], z.shape[1], c.shape[1], dtype=torch.float64)
    for b in range(z.shape[0]):
        for m in range(z.shape[1]):
            for n in range(c.shape[1]):
                out[b, m, n] = sum(float(z[b, m, k]) * float(c[b, n, k]) for k in range(z.shape[2]))
    return out


def _recording_references():
    """The judge's references, wrapped to record every call's arguments and result."""
    refs, calls = pj.references(), []

    def wrap(name):
        def f(*args):
            out = refs[name](*args)
            calls.append((name, args, out))
            return out
        return f
    return {k: wrap(k) for k in refs}, calls


def _run(probe):
    refs, calls = _recording_references()
    return expected_value(probe, refs), calls


def test_probes_draw_their_inputs_as_documented():
    rng, probes = _probes()
    assert rng.calls == [
        ("randint", 1, 3), ("randint", 20, 30), ("randint", 3, 8), ("randint", 16, 64), ("randint", 5, 20), ("randint", 2, 4),
        *[("randint", 1, 4), ("randint", 1, 80), ("randint", 2, 20), ("randint", 1, 64)] * 4,
        ("randint", 1, 3), ("uniform", 0.1, 3), ("randint", 4, 20), ("uniform", 0.1, 5), ("randint", 20, 100),
        ("uniform", 0.01, 1), ("randint", 2, 6), ("randint", 7, 20), ("randint", 21, 100),
        ("randrange", 10**6), ("randrange", 10**6), ("randrange", 10**6), ("randrange", 10**6), ("randrange", 10**6),
        ("randint", 3, 9), ("randint", 2, 6)]
    assert rng.values == []
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q1", "test_prototypes_hand_computed", False), ("q1", "test_prototypes_shuffled_support", False),
        ("q1", "test_prototypes_match_metalib_unequal_counts_float64", True),
        ("q1", "test_prototypes_one_shot_and_gradient", True),
        ("q2", "test_proto_logits_hand_computed", False), ("q2", "test_proto_logits_match_a_loop", False),
        ("q2", "test_proto_logits_match_metalib", True), ("q2", "test_proto_logits_match_metalib_float64", True),
        ("q2", "test_proto_logits_invariances_and_errors", True),
        ("q3", "test_excess_sq_distance_example", False), ("q3", "test_excess_sq_distance_against_points", True),
        ("q4", "test_p_true_at_zero_scale_four_way", False), ("q4", "test_p_true_at_zero_scale_more_ways", True)]
    assert pj.JUDGE.probes(random.Random(0))[0].name == "test_prototypes_hand_computed"


def test_uniform_draws_are_rounded_to_four_decimals():
    rng = _ScriptedRng(*_VALUES[:22], 2, 1.234567, 5, 0.123456, 30, 0.987654, *_VALUES[28:])
    probes = {p.name: p for p in pj.make_probes(rng)}
    assert "[(2, 1.2346), (5, 0.1235), (30, 0.9877)]" in probes["test_excess_sq_distance_against_points"].code


def test_logits_sizes_draw_b_m_n_d_per_entry():
    rng = _ScriptedRng(1, 2, 3, 4, 4, 80, 20, 64)
    assert pj._logits_sizes(rng, "float16", 2) == [(1, 2, 3, 4, "float16"), (4, 80, 20, 64, "float16")]
    assert rng.calls == [("randint", 1, 4), ("randint", 1, 80), ("randint", 2, 20), ("randint", 1, 64)] * 2


def test_head_defines_the_helpers_torch_and_a_seeded_generator():
    assert pj.HEAD == common.HELPERS + "import torch\nG = lambda seed: torch.Generator().manual_seed(seed)\n"


def test_prototypes_probes_with_the_references():
    probes = _by_name()
    got, _ = _run(probes["test_prototypes_hand_computed"])
    torch.testing.assert_close(got, torch.tensor([[[1.0, 0.0], [0.0, 3.0]]]))

    got, calls = _run(probes["test_prototypes_shuffled_support"])
    (_, (z, y, n), _), (_, (z2, y2, n2), _) = calls
    assert z.shape == (3, 12, 5) and y.shape == (3, 12) and n == n2 == 4 and z.dtype == torch.float32
    for b in range(3):
        assert sorted(y[b].tolist()) == sorted(list(range(4)) * 3)
    assert not torch.equal(y, torch.arange(4).repeat(3).expand(3, 12))            # shuffled
    assert not torch.equal(y2, y) and sorted(map(tuple, z2[0].tolist())) == sorted(map(tuple, z[0].tolist()))
    torch.testing.assert_close(got["prototypes"].double(), _loop_means(z, y, 4))
    torch.testing.assert_close(got["after reordering the support set"].double(), _loop_means(z, y, 4))
    assert set(got) == {"prototypes", "after reordering the support set"}

    got, calls = _run(probes["test_prototypes_match_metalib_unequal_counts_float64"])
    (_, (z, y, n), _), = calls
    assert z.shape == (2, 21, 17) and z.dtype == torch.float64 and y.shape == (2, 21) and n == 3
    for b in range(2):
        assert set(y[b].tolist()) == {0, 1, 2}
    assert y.dtype == torch.int64
    torch.testing.assert_close(got, _loop_means(z, y, 3))

    got, calls = _run(probes["test_prototypes_one_shot_and_gradient"])
    (_, (z2, y2, n2), _), (_, (z, order, n1), _) = calls
    assert z.shape == (1, 6, 3) and sorted(order[0].tolist()) == list(range(6)) and n1 == 6
    assert z2.shape == (4, 6, 2) and n2 == 3 and z2.requires_grad
    for b in range(4):
        assert sorted(y2[b].tolist()) == [0, 1, 1, 2, 2, 2]
    assert set(got) == {"1-shot prototypes", "gradient of sum(prototypes) w.r.t. z_support (1 / class count)"}
    want = torch.zeros(1, 6, 3)
    for i, k in enumerate(order[0].tolist()):
        want[0, k] = z[0, i]
    torch.testing.assert_close(got["1-shot prototypes"], want)
    grad = got["gradient of sum(prototypes) w.r.t. z_support (1 / class count)"]
    counts = {0: 1, 1: 2, 2: 3}
    want = torch.tensor([[[1 / counts[int(k)]] * 2 for k in y2[b]] for b in range(4)])
    torch.testing.assert_close(grad, want)


def test_gradient_is_none_when_prototypes_do_not_track_it():
    probe = _by_name()["test_prototypes_one_shot_and_gradient"]
    ns = {"torch": torch, "prototypes": lambda z, y, n: torch.zeros(z.shape[0], n, z.shape[2])}
    exec(probe.code, ns)
    assert ns["result"]["gradient of sum(prototypes) w.r.t. z_support (1 / class count)"] is None
    ns = {"torch": torch, "prototypes": lambda z, y, n: "no tensor"}
    exec(probe.code, ns)
    assert ns["result"]["gradient of sum(prototypes) w.r.t. z_support (1 / class count)"] is None


def test_logits_probes_with_the_references():
    probes = _by_name()
    got, _ = _run(probes["test_proto_logits_hand_computed"])
    torch.testing.assert_close(got, {"euclidean": torch.tensor([[[-1.0, -5.0]]]), "dot": torch.tensor([[[1.0, 3.0]]])})

    got, calls = _run(probes["test_proto_logits_match_a_loop"])
    assert [c[1][2] for c in calls] == ["euclidean", "dot"]
    z, c = calls[0][1][:2]
    assert z.shape == (2, 7, 5) and c.shape == (2, 3, 5)
    torch.testing.assert_close(got["euclidean"].double(), _loop_euclid(z, c), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["dot"].double(), _loop_dot(z, c), atol=1e-5, rtol=1e-5)

    for name, sizes, dtype in [("test_proto_logits_match_metalib", [(1, 5, 3, 4), (2, 6, 2, 3)], torch.float32),
                               ("test_proto_logits_match_metalib_float64", [(3, 4, 2, 5), (1, 2, 4, 6)], torch.float64)]:
        got, calls = _run(probes[name])
        assert len(got) == 2 and len(calls) == 6
        for i, (B, M, N, D) in enumerate(sizes):
            (_, (z, c, s1), _), (_, (z2, c2, s2), _), (_, (z3, c3), _) = calls[3 * i: 3 * i + 3]
            assert (s1, s2) == ("euclidean", "dot") and z.shape == (B, M, D) and c.shape == (B, N, D)
            assert z.dtype == c.dtype == dtype and z2 is z and c3 is c
            assert set(got[i]) == {"euclidean", "dot", "default (euclidean)"}
            torch.testing.assert_close(got[i]["euclidean"].double(), _loop_euclid(z, c), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got[i]["dot"].double(), _loop_dot(z, c), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got[i]["default (euclidean)"].double(), _loop_euclid(z, c), atol=1e-4, rtol=1e-4)


def test_metalib_probe_seeds_its_generator():
    a = expected_value(_by_name()["test_proto_logits_match_metalib"], pj.references())
    rng = _ScriptedRng(*_VALUES[:33], 99, *_VALUES[34:])
    b = expected_value({p.name: p for p in pj.make_probes(rng)}["test_proto_logits_match_metalib"], pj.references())
    assert not torch.equal(a[0]["dot"], b[0]["dot"])
    assert "g = G(13)\n" in _by_name()["test_proto_logits_match_metalib"].code


def test_invariance_probe_with_the_references():
    got, calls = _run(_by_name()["test_proto_logits_invariances_and_errors"])
    assert set(got) == {"euclidean after shifting queries and prototypes together", "dot of 3 z", "cosine"}
    assert got["cosine"] == "ValueError"
    (_, (zs, cs, s1), _), (_, (z3, c, s2), _) = calls[:2]
    assert s1 == "euclidean" and s2 == "dot" and zs.shape == (2, 5, 4) and cs.shape == (2, 3, 4)
    assert zs.dtype == cs.dtype == torch.float64
    torch.testing.assert_close(got["euclidean after shifting queries and prototypes together"], _loop_euclid(zs, cs))
    torch.testing.assert_close(got["dot of 3 z"], _loop_dot(z3, c))
    pj._invariances(got, got)


def test_invariance_check_messages():
    e = {"euclidean after shifting queries and prototypes together": torch.zeros(1, 1, 2, dtype=torch.float64),
         "dot of 3 z": torch.ones(1, 1, 2, dtype=torch.float64), "cosine": "ValueError"}
    check = _by_name()["test_proto_logits_invariances_and_errors"].check
    assert check is pj._invariances
    _fails(check, [1], e, "proto_logits' results did not come back")
    _fails(check, {**e, "cosine": "nothing"}, e, "proto_logits(..., 'cosine') should raise ValueError, returned")
    _fails(check, {**e, "cosine": "KeyError"}, e, "proto_logits(..., 'cosine') should raise ValueError, raised KeyError")
    _fails(check, {k: v for k, v in e.items() if k != "cosine"}, e,
           "proto_logits(..., 'cosine') should raise ValueError, raised None")
    name = "logits (shifted queries and prototypes; dot of 3 z)"
    _fails(check, {**e, "dot of 3 z": e["dot of 3 z"].float()}, e,
           f"{name} dot of 3 z should keep the dtype torch.float64, got torch.float32")
    bad = e["dot of 3 z"] + 2e-9 + 1e-9 * 1.01
    with pytest.raises(AssertionError, match="^" + re.escape(f"{name} dot of 3 z differs: ") + ".*atol=1e-09, rtol=1e-09"):
        check({**e, "dot of 3 z": bad}, e)
    check({**e, "dot of 3 z": e["dot of 3 z"] + 1.9e-9 * 0.99}, e)


def _edges(check, expected, atol, rtol, name, key=None):
    """Passes just inside atol + rtol |expected|, fails just outside with the probe's name and tolerances."""
    bound = atol + rtol * expected.abs()
    wrap = (lambda t: t) if key is None else (lambda t: {key: t})
    check(wrap(expected + (1 - 1e-3) * bound), wrap(expected))
    full = name if key is None else f"{name} {key}"
    with pytest.raises(AssertionError, match="^" + re.escape(f"{full} differs: ") + ".*" +
                       re.escape(f"tolerance atol={atol:g}, rtol={rtol:g})") + "$"):
        check(wrap(expected + (1 + 1e-3) * bound), wrap(expected))


def test_tensor_checks_names_tolerances_and_dtypes():
    probes = _by_name()
    e = torch.tensor([[[2.0, -3.0]]], dtype=torch.float64)
    table = [("test_prototypes_hand_computed", "prototypes (class 0: mean (1, 0), class 1: mean (0, 3))", 1e-5, 1e-5, False),
             ("test_prototypes_shuffled_support", "prototypes of shuffled support labels, shape (3, 4, 5):", 1e-5, 1e-5,
              False),
             ("test_prototypes_match_metalib_unequal_counts_float64", "prototypes (float64, unequal class counts)",
              1e-12, 1e-10, True),
             ("test_prototypes_one_shot_and_gradient", "prototypes:", 1e-5, 1e-5, False),
             ("test_proto_logits_hand_computed", "logits of (1, 1):", 1e-5, 1e-5, False),
             ("test_proto_logits_match_a_loop", "logits, shape (2, 7, 3):", 1e-4, 1e-4, False),
             ("test_proto_logits_match_metalib", "float32 logits for (B, M, N, D) in [(1, 5, 3, 4), (2, 6, 2, 3)]",
              1e-3, 1e-3, True),
             ("test_proto_logits_match_metalib_float64", "float64 logits for (B, M, N, D) in [(3, 4, 2, 5), (1, 2, 4, 6)]",
              1e-9, 1e-9, True)]
    for probe, name, atol, rtol, dtype in table:
        check = probes[probe].check
        _edges(check, e, atol, rtol, name)
        _edges(check, e, atol, rtol, name, key="k")
        if dtype:
            _fails(check, e.float(), e, f"{name} should keep the dtype torch.float64, got torch.float32")
        else:
            check(e.float(), e)
        _fails(check, None, e, f"{name} is None: {common.NOTHING}")


def _number_edges(check, args, expected, tol, message):
    check([e + 0.99 * tol for e in expected], expected)
    for i, e in enumerate(expected):
        got = list(expected)
        got[i] = e + 1.01 * tol
        _fails(check, got, expected, message(i, got[i]))


def test_number_checks_tolerances_and_hints():
    p = _by_name()
    assert p["test_excess_sq_distance_example"].code == common.number_probe("excess_sq_distance", [(3, 2.0)])
    assert p["test_excess_sq_distance_against_points"].code == common.number_probe(
        "excess_sq_distance", [(2, 1.5), (5, 0.25), (30, 0.5)])
    assert p["test_p_true_at_zero_scale_four_way"].code == common.number_probe("p_true_at_zero_scale", [(4,)])
    assert p["test_p_true_at_zero_scale_more_ways"].code == common.number_probe("p_true_at_zero_scale",
                                                                             [(4,), (9,), (25,)])
    _number_edges(p["test_excess_sq_distance_example"].check, [(3, 2.0)], [0.5], 1e-6,
                  lambda i, g: f"excess_sq_distance(3, 2) = {g:.6g}: for K = 3 points and r = 2 the excess is 12 "
                               "(the mean is the unique minimiser; check your expansion)")
    _number_edges(p["test_excess_sq_distance_example"].check, [(3, 2.0)], [300.0], 1e-6, lambda i, g:
                  f"excess_sq_distance(3, 2) = {g:.6g}: for K = 3 points and r = 2 the excess is 12 "
                  "(the mean is the unique minimiser; check your expansion)")
    ks = [(2, 1.5), (5, 0.25), (30, 0.5)]
    hint = ("the excess grows with the number of points and with the square of r: "
            "expand |z_k - c|^2 around the mean of the points")
    calls = ["excess_sq_distance(2, 1.5)", "excess_sq_distance(5, 0.25)", "excess_sq_distance(30, 0.5)"]
    check = p["test_excess_sq_distance_against_points"].check
    _number_edges(check, ks, [0.5, 0.5, 0.5], 1e-6, lambda i, g: f"{calls[i]} = {g:.6g}: {hint}")
    _number_edges(check, ks, [400.0, 400.0, 400.0], 400e-6, lambda i, g: f"{calls[i]} = {g:.6g}: {hint}")
    _number_edges(p["test_p_true_at_zero_scale_four_way"].check, [(4,)], [300.0], 1e-6,
                  lambda i, g: f"p_true_at_zero_scale(4) = {g:.6g}: on 4-way tasks: what is the softmax of 4 equal logits?")
    ways = ["p_true_at_zero_scale(4)", "p_true_at_zero_scale(9)", "p_true_at_zero_scale(25)"]
    _number_edges(p["test_p_true_at_zero_scale_more_ways"].check, [(4,), (9,), (25,)], [300.0, 0.1, 0.5], 1e-6,
                  lambda i, g: f"{ways[i]} = {g:.6g}: with alpha -> 0 every dot-product logit alpha c_y.z goes to 0")


def test_references_by_hand():
    refs = pj.references()
    assert set(refs) == {"prototypes", "proto_logits", "excess_sq_distance", "p_true_at_zero_scale"}
    assert refs["excess_sq_distance"](3, 2.0) == 12.0 and refs["excess_sq_distance"](5, 0.5) == 1.25
    assert refs["p_true_at_zero_scale"](4) == 0.25 and refs["p_true_at_zero_scale"](5) == 0.2
    z = torch.tensor([[[1.0, 1.0]]])
    c = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    torch.testing.assert_close(refs["proto_logits"](z, c), torch.tensor([[[-1.0, -5.0]]]))
    torch.testing.assert_close(refs["proto_logits"](z, c, "dot"), torch.tensor([[[1.0, 3.0]]]))
    with pytest.raises(ValueError):
        refs["proto_logits"](z, c, "cosine")
    torch.testing.assert_close(refs["prototypes"](torch.tensor([[[2.0], [4.0], [7.0]]]), torch.tensor([[1, 1, 0]]), 2),
                               torch.tensor([[[7.0], [3.0]]]))


def test_judge_is_registered_with_its_guarded_references():
    assert judge_for("04_prototypical_networks") is pj.JUDGE
    assert pj.JUDGE.assignment == "04_prototypical_networks"
    assert pj.JUDGE.make_probes is pj.make_probes and pj.JUDGE.references is pj.references
    assert pj.JUDGE.guarded == {"metalib.protonet": ("prototypes", "similarity_logits")}
    assert pj.JUDGE.unavailable == {}
