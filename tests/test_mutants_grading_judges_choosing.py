"""Fast tests of notebook 09's judge (`metalib.grading.judges.choosing`), from `make mutants`.

`tools/mutants.py grading/ --only 'metalib.grading.judges.choosing.*'` showed the judge untested
outside the sandboxed grading runs: the probe code (inputs rebuilt here from the same seeds and
compared with plain loops: W = 2c, b = -|c|^2, the head's gradient, Meta-SGD's step), which inputs
`make_probes` draws and from which ranges, every check's conditions, thresholds and exact messages
(the relabelling checks, the dtype and gradient-flow checks, the step checks), and the references.
"""
from __future__ import annotations

import pytest
import torch

from metalib.grading.judge import expected_value, judge_for
from metalib.grading.judges import choosing as cj
from metalib.grading.judges import common
from metalib.tasks import Task
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails, loop_class_means as _means  # noqa: E402


def _run(code, **overrides):
    refs = {**cj.references(), **overrides}
    return expected_value(type("P", (), {"code": code, "name": "p"})(), refs)


# ------------------------------------------------------------------ probe code, run with the references

def test_hand_probe_gives_twice_the_prototypes_and_minus_their_squared_norms():
    got = _run(cj.HAND)
    assert set(got) == {"W = 2 c", "b = -|c|^2"}
    torch.testing.assert_close(got["W = 2 c"], torch.tensor([[[2.0, 0.0], [0.0, 6.0]]]))
    torch.testing.assert_close(got["b = -|c|^2"], torch.tensor([[-1.0, -9.0]]))


def test_softmax_probe_is_the_protonet_log_softmax():
    seed, B, N, K, M, D = 7, 2, 3, 2, 4, 5
    got = _run(cj._softmax(seed, B, N, K, M, D))
    g = torch.Generator().manual_seed(seed)
    zs, zq = torch.randn(B, N * K, D, generator=g), torch.randn(B, M, D, generator=g)
    ys = torch.stack([torch.arange(N).repeat(K)[torch.randperm(N * K, generator=g)] for _ in range(B)])
    c = _means(zs, ys, N)
    want = torch.zeros(B, M, N, dtype=torch.float64)
    for b in range(B):
        for m in range(M):
            d = [-float(((zq[b, m].double() - c[b, n]) ** 2).sum()) for n in range(N)]
            top = max(d)
            lse = top + torch.tensor([x - top for x in d], dtype=torch.float64).exp().sum().log()
            want[b, m] = torch.tensor(d, dtype=torch.float64) - lse
    assert got.shape == (B, M, N)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_float64_probe_has_unequal_counts_and_every_class():
    seen = {}

    def head(z, y, n):
        seen.update(z=z, y=y, n=n)
        return cj.references()["proto_head"](z, y, n)

    got = _run(cj._float64(5, 2, 9, 3, 4), proto_head=head)
    z, y = seen["z"], seen["y"]
    assert z.shape == (2, 9, 4) and z.dtype == torch.float64 and y.shape == (2, 9) and seen["n"] == 3
    for b in range(2):
        assert set(y[b].tolist()) == {0, 1, 2}
    g = torch.Generator().manual_seed(5)          # z, then 9 - 3 = 6 random labels per task, then the order
    torch.testing.assert_close(z, torch.randn(2, 9, 4, generator=g, dtype=torch.float64))
    extra = torch.randint(0, 3, (2, 6), generator=g)
    order = torch.randperm(9, generator=g)
    want = [[([0, 1, 2] + extra[b].tolist())[i] for i in order.tolist()] for b in range(2)]
    assert y.tolist() == want
    c = _means(z, y, 3)
    assert set(got) == {"W", "b"}
    torch.testing.assert_close(got["W"], 2 * c)
    torch.testing.assert_close(got["b"], -(c ** 2).sum(-1))
    cj._keeps_float64(got, got)


def test_gradient_probe_is_the_heads_vector_jacobian_product():
    seed, B, S, N, D = 3, 2, 7, 3, 4
    got = _run(cj._gradient(seed, B, S, N, D))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, S, D, generator=g, dtype=torch.float64)
    y = torch.cat([torch.arange(N), torch.randint(0, N, (S - N,), generator=g)])[torch.randperm(S, generator=g)]
    v = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    assert sorted(set(y.tolist())) == [0, 1, 2]
    c = _means(z, y.expand(B, S), N)
    want = torch.zeros(B, S, D, dtype=torch.float64)
    for b in range(B):
        for i in range(S):
            k = int(y[i])
            count = int((y == k).sum())
            want[b, i] = (2 * v[b, k] - 2 * c[b, k]) / count       # d/dc (2c.v - |c|^2) = 2v - 2c, c a mean
    assert got["flows"] is True
    torch.testing.assert_close(got["gradient of the head with respect to z_support"], want)
    cj._flows(got, got)
    for detached in (lambda z, y, n: (torch.zeros(2), torch.zeros(2)), lambda z, y, n: (None, torch.zeros(2)),
                     lambda z, y, n: (torch.zeros(2), None)):
        got = _run(cj._gradient(seed, B, S, N, D), proto_head=detached)
        assert got == {"flows": False, "gradient of the head with respect to z_support": None}
    only_b = _run(cj._gradient(seed, B, S, N, D), proto_head=lambda z, y, n: (torch.zeros(B, N, D, dtype=torch.float64),
                                                                                -(z ** 2).sum((1, 2))[:, None]))
    assert only_b["flows"] is True
    torch.testing.assert_close(only_b["gradient of the head with respect to z_support"], -2 * z)


def test_shuffle_probes_build_their_tasks_and_pass_with_the_reference():
    got = _run(cj.CONSISTENT)
    ins = got["in"]
    assert [t.shape for t in ins] == [(6, 10, 1, 4, 4), (6, 10), (6, 15, 1, 4, 4), (6, 15)]
    assert ins[1][0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and ins[3][5].tolist() == sum(([k] * 3 for k in range(5)), [])
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(ins[0], torch.randn(6, 10, 1, 4, 4, generator=g))
    assert len(got["out"]) == 1
    cj._consistent(got, got)

    got = _run(cj.REPRODUCIBLE)
    ins = got["in"]
    assert [t.shape for t in ins] == [(40, 5, 1, 2, 2), (40, 5), (40, 5, 1, 2, 2), (40, 5)]
    assert bool((ins[0] == 0).all()) and ins[1][17].tolist() == [0, 1, 2, 3, 4] and torch.equal(ins[1], ins[3])
    assert len(got["out"]) == 2 and torch.equal(got["out"][0][1], got["out"][1][1])
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    assert got["out"][0][1][0].tolist() == perm.tolist()
    cj._random_and_reproducible(got, got)

    code = cj._any_order(4, 3, 13, 2, 9)
    got = _run(code)
    ins = got["in"]
    assert [t.shape for t in ins] == [(3, 13, 1, 2, 2), (3, 13), (3, 26, 1, 2, 2), (3, 26)]
    for b in range(3):
        assert sorted(ins[1][b].tolist()) == list(range(13)) and sorted(ins[3][b].tolist()) == sorted(list(range(13)) * 2)
    assert ins[1][0].tolist() != list(range(13))
    assert len(got["out"]) == 3 and torch.equal(got["out"][0][1], got["out"][1][1])
    first = torch.randperm(13, generator=torch.Generator().manual_seed(9))
    other = torch.randperm(13, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(got["out"][0][1][0], first[ins[1][0]])
    torch.testing.assert_close(got["out"][2][1][0], other[ins[1][0]])
    cj._any_order_check(got, got)
    none = _run(code, shuffle_labels=lambda task, g: "no task")
    assert none["out"] == [None, None, None]


def test_step_probes_with_the_reference():
    got = _run(cj.STEP_HAND)
    torch.testing.assert_close(got["new"], {"w": torch.tensor([0.95, 2.2]), "b": torch.tensor([4.0])})
    torch.testing.assert_close(got["params after the call"], {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])})
    assert _run(cj.STEP_HAND, metasgd_step=lambda p, g, r: None)["new"] is None

    got = _run(cj.STEP_GRADIENT)
    assert got["flows"] is True
    torch.testing.assert_close(got["d/d rate"], torch.tensor([-0.5, 1.0, -3.0]))
    torch.testing.assert_close(got["d/d gradient"], torch.tensor([-0.1, -0.2, -0.3]))
    off = _run(cj.STEP_GRADIENT, metasgd_step=lambda p, g, r: {"w": torch.zeros(3)})
    assert off == {"flows": False, "d/d rate": None, "d/d gradient": None}
    assert _run(cj.STEP_GRADIENT, metasgd_step=lambda p, g, r: [1])["flows"] is False
    only_g = _run(cj.STEP_GRADIENT, metasgd_step=lambda p, g, r: {"w": p["w"] - g["w"]})
    assert only_g["d/d rate"] is None
    torch.testing.assert_close(only_g["d/d gradient"], -torch.ones(3))

    shapes = {"a": (2, 3), "b": (4,)}
    got = _run(cj._step_random(8, shapes))
    gen = torch.Generator().manual_seed(8)
    drawn = [{n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in shapes.items()} for _ in range(3)]
    want = {n: drawn[0][n] - drawn[2][n] * drawn[1][n] for n in shapes}
    assert set(got) == {"a", "b"} and got["a"].dtype == torch.float64
    torch.testing.assert_close(got, want)
    assert _run(cj._step_random(8, shapes), metasgd_step=lambda p, g, r: 3) is None


# ------------------------------------------------------------------ make_probes

def test_make_probes_draws_and_composes_its_probes():
    rng = _ScriptedRng(5,                          # N
                       11, 2, 4, 9,                # float64: seed, B, S - N, D
                       12, 3, 4, 2, 5, 6,          # other softmax: seed, B, N, K, M, D
                       13, 2, 3, 7,                # gradient: seed, B, S - N, D
                       14, 3, 4, 5, 6, 7, 2, 8, 3, 9, 5,   # step: seed, layers, (w0, w1, b) per layer
                       15, 4, 20, 2, 16)           # any order: seed, B, N, Q, again
    probes = cj.make_probes(rng)
    assert rng.values == []
    assert rng.calls == [
        ("randint", 3, 8), ("randrange", 10**6), ("randint", 1, 3), ("randint", 3, 12), ("randint", 8, 40),
        ("randrange", 10**6), ("randint", 1, 4), ("randint", 2, 10), ("randint", 1, 5), ("randint", 3, 9),
        ("randint", 3, 16), ("randrange", 10**6), ("randint", 1, 4), ("randint", 1, 8), ("randint", 3, 10),
        ("randrange", 10**6), ("randint", 2, 4), *[("randint", 2, 9), ("randint", 1, 9), ("randint", 2, 9)] * 3,
        ("randrange", 10**6), ("randint", 3, 6), ("randint", 12, 25), ("randint", 1, 3), ("randrange", 10**6)]
    want = [
        ("q1", "proto_head_hand_computed", False, cj.HAND, None, 1e-6, 1e-5),
        ("q1", "proto_head_gives_the_protonet_softmax", False, cj._softmax(0, 3, 4, 2, 6, 5), None, 1e-4, 1e-4),
        ("q1", "proto_head_float64_unequal_counts", True, cj._float64(11, 2, 9, 5, 9), cj._keeps_float64, 1e-10, 1e-8),
        ("q1", "proto_head_other_softmax", True, cj._softmax(12, 3, 4, 2, 5, 6), None, 1e-4, 1e-4),
        ("q1", "proto_head_passes_gradients_to_the_embeddings", True, cj._gradient(13, 2, 8, 5, 7), cj._flows,
         1e-10, 1e-8),
        ("q1b", "metasgd_step_hand_computed_and_inputs_unchanged", False, cj.STEP_HAND, cj._step_hand, 1e-10, 1e-8),
        ("q1b", "metasgd_step_is_differentiable_in_rates_and_gradients", False, cj.STEP_GRADIENT, cj._step_flows,
         1e-10, 1e-8),
        ("q1b", "metasgd_step_many_tensors_float64", True, cj._step_random(14, {
            "layers.0.weight": (4, 5), "layers.0.bias": (6,), "layers.2.weight": (7, 2), "layers.2.bias": (8,),
            "layers.4.weight": (3, 9), "layers.4.bias": (5,)}), cj._step_keys_and_values, 1e-10, 1e-8),
        ("q2", "any_way_is_a_set_of_row_names", False, common.choice_probe("any_way_rows")),
        ("q2", "any_way_is_right", True, common.choice_probe("any_way_rows")),
        ("q3", "shuffle_labels_is_a_consistent_permutation_per_task", False, cj.CONSISTENT, cj._consistent, 1e-10, 1e-8),
        ("q3", "shuffle_labels_is_random_per_task_and_reproducible", False, cj.REPRODUCIBLE,
         cj._random_and_reproducible, 1e-10, 1e-8),
        ("q3", "shuffle_labels_any_order_and_many_ways", True, cj._any_order(15, 4, 20, 2, 16), cj._any_order_check,
         1e-10, 1e-8),
    ]
    for p, w in zip(probes, want, strict=True):
        assert (p.question, p.name, p.hidden, p.code) == w[:4], p.name
        if len(w) > 4:
            assert (p.check, p.atol, p.rtol) == w[4:], p.name


def test_make_probes_choice_checks():
    probes = {p.name: p for p in cj.make_probes(__import__("random").Random(1))}
    assert cj.ROWS == {"finetune", "blackbox", "matching", "protonet", "maml", "anil", "protomaml"}
    public, hidden = probes["any_way_is_a_set_of_row_names"].check, probes["any_way_is_right"].check
    ans = {"set": True, "items": ["maml"], "repr": "{'maml'}"}
    public(ans, None)
    public({"set": True, "items": sorted(cj.ROWS), "repr": ""}, None)
    _fails(public, {"set": True, "items": ["reptile"], "repr": ""}, None,
           f"['reptile'] are not among the options {sorted(cj.ROWS)}")
    _fails(public, {"set": False, "items": ["maml"], "repr": "['maml']"}, None,
           "return a set of row names, e.g. {'anil'}, got ['maml']")
    right = {"items": ["finetune", "matching", "protomaml", "protonet"]}
    hidden({"set": True, "items": right["items"], "repr": ""}, right)
    _fails(hidden, ans, right, "not quite: look at which learners end in a layer with a fixed number of outputs")


# ------------------------------------------------------------------ checks

def test_keeps_float64_messages():
    e = {"W": torch.zeros(1, 2, dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64)}
    cj._keeps_float64({"W": e["W"] + 0.5e-12, "b": e["b"]}, e)
    _fails(cj._keeps_float64, {"W": e["W"].float(), "b": e["b"]}, e,
           "keep the dtype of z_support (float64), got torch.float32 and torch.float64")
    _fails(cj._keeps_float64, {"W": e["W"], "b": e["b"].float()}, e,
           "keep the dtype of z_support (float64), got torch.float64 and torch.float32")
    name = "head (float64, unequal class counts)"
    _fails(cj._keeps_float64, {"W": e["W"] + 1, "b": e["b"]}, e,
           f"{name}['W'] differs: max abs error 1 at [0, 0] (got 1, expected 0; tolerance atol=1e-12, rtol=1e-10)")
    _fails(cj._keeps_float64, {"W": e["W"], "b": None}, e, f"{name}['b']: expected a tensor, got NoneType")
    _fails(cj._keeps_float64, {"W": e["W"].float(), "b": None}, e, f"{name}['b']: expected a tensor, got NoneType")
    _fails(cj._keeps_float64, [e["W"], e["b"]], e, f"{name}: expected keys ['W', 'b']")
    _fails(cj._keeps_float64, {"W": e["W"].float()}, e, f"{name}: expected keys ['W', 'b']")


def test_flows_messages():
    e = {"flows": True, "g": torch.zeros(2, dtype=torch.float64)}
    cj._flows({"flows": True, "g": e["g"] + 0.5e-12}, e)
    for got in ([1], {"flows": True}, {"flows": True, "g": e["g"], "extra": 1}):
        _fails(cj._flows, got, e, "the measurement did not come back")
    for flows in (False, 1, None):
        _fails(cj._flows, {"flows": flows, "g": e["g"]}, e,
               "W and b must depend on z_support (no detach, no .item()): gradients flow through the head")
    _fails(cj._flows, {"flows": True, "g": e["g"] + 1}, e,
           "proto_head['g'] differs: max abs error 1 at [0] (got 1, expected 0; tolerance atol=1e-12, rtol=1e-10)")


def _task(ys, yq):
    ys, yq = torch.tensor(ys), torch.tensor(yq)
    return [torch.zeros(*ys.shape, 2), ys, torch.ones(*yq.shape, 2), yq]


def test_outputs_messages():
    task = _task([[0, 1]], [[1, 0]])
    e = {"in": task, "out": [None]}
    assert cj._outputs({"out": [list(task)]}, e) == (task, [task])
    for got in ([1], {"out": None}, {"out": []}, {"out": [task, task]}, {}):
        _fails(cj._outputs, got, e, "the relabelled tasks did not come back")
    bad = "shuffle_labels should return a Task (task._replace(y_support=..., y_query=...))"
    for out in (None, task[:3], task + [task[0]], [task[0], task[1], task[2], [1, 0]]):
        _fails(cj._outputs, {"out": [out]}, e, bad)
    _fails(cj._outputs, {"out": [[task[0] + 1, *task[1:]]]}, e, "images must not change")
    _fails(cj._outputs, {"out": [[task[0], task[1], task[2] + 1, task[3]]]}, e, "images must not change")
    _fails(cj._outputs, {"out": [[task[0], task[1][0], task[2], task[3]]]}, e, "label shapes must not change")
    _fails(cj._outputs, {"out": [[task[0], task[1], task[2], task[3][0]]]}, e, "label shapes must not change")
    _fails(cj._outputs, {"out": [[task[0], task[1].int(), task[2], task[3]]]}, e,
           "labels must stay int64 (class indices), got torch.int32")
    _fails(cj._outputs, {"out": [[task[0], task[1], task[2], task[3].int()]]}, e,
           "labels must stay int64 (class indices), got torch.int64")


def test_permutation_per_task_messages():
    task = _task([[0, 1, 2], [0, 1, 2]], [[2, 1], [0, 0]])
    ok = _task([[0, 1, 2], [2, 0, 1]], [[2, 1], [2, 2]])
    cj._permutation_per_task(task, ok, 3)
    with pytest.raises(AssertionError) as err:
        cj._permutation_per_task(task, _task([[0, 1, 2], [2, 0, 1]], [[2, 1], [2, 1]]), 3)
    assert str(err.value) == "task 1: class 0 got two labels (support and query must agree)"
    with pytest.raises(AssertionError) as err:
        cj._permutation_per_task(task, _task([[0, 1, 2], [2, 0, 1]], [[1, 1], [2, 2]]), 3)
    assert str(err.value) == "task 0: class 2 got two labels (support and query must agree)"
    with pytest.raises(AssertionError) as err:
        cj._permutation_per_task(task, _task([[0, 1, 2], [3, 0, 1]], [[2, 1], [3, 3]]), 3)
    assert str(err.value) == "task 1: new labels [0, 1, 3] are not a permutation of 0..2"
    with pytest.raises(AssertionError) as err:
        cj._permutation_per_task(task, _task([[0, 1, 2], [0, 1, 2]], [[2, 1], [0, 0]]), 3)
    assert str(err.value) == "every task kept its labels: shuffle them (one random permutation per task)"
    cj._permutation_per_task(task, _task([[0, 2, 1], [0, 1, 2]], [[1, 2], [0, 0]]), 3)   # only task 0 relabelled: fine
    # the tasks are counted on the labels (here the query images are a single dummy row)
    lone = [task[0], task[1], torch.zeros(1, 2, 2), task[3]]
    with pytest.raises(AssertionError) as err:
        cj._permutation_per_task(lone, _task([[0, 1, 2], [2, 0, 1]], [[2, 1], [2, 1]]), 3)
    assert str(err.value) == "task 1: class 0 got two labels (support and query must agree)"
    assert cj._equal(torch.tensor([1, 2]), torch.tensor([1, 2])) is True
    assert cj._equal(torch.tensor([1, 2]), torch.tensor([2, 1])) is False


def test_consistent_uses_five_ways():
    ys = [[0, 1, 2, 3, 4]]
    task = _task(ys, ys)
    shifted = _task([[1, 2, 3, 4, 0]], [[1, 2, 3, 4, 0]])
    cj._consistent({"out": [shifted]}, {"in": task, "out": [None]})
    four = _task([[0, 1, 2, 3]], [[0, 1, 2, 3]])
    with pytest.raises(AssertionError, match=r"^task 0: new labels \[0, 1, 2, 3\] are not a permutation of 0..4$"):
        cj._consistent({"out": [_task([[1, 0, 2, 3]], [[1, 0, 2, 3]])]}, {"in": four, "out": [None]})


def _rows(perms):
    y = torch.tensor(perms)
    return [torch.zeros(*y.shape, 1), y, torch.zeros(*y.shape, 1), y]


def test_random_and_reproducible_thresholds_and_messages():
    import itertools
    perms = [list(p) for p in itertools.islice(itertools.permutations(range(5)), 0, 120, 3)][:40]  # 40 distinct
    task = _rows([[0, 1, 2, 3, 4]] * 40)
    e = {"in": task, "out": [None, None]}
    a = _rows(perms)
    cj._random_and_reproducible({"out": [a, a]}, e)
    b = _rows([perms[0]] + perms[1:])
    b[1] = b[1].clone()
    b[1][3] = torch.tensor(perms[4])
    _fails(cj._random_and_reproducible, {"out": [a, b]}, e, "the same generator seed must give the same labels")
    eleven = _rows([perms[i % 11] for i in range(40)])
    cj._random_and_reproducible({"out": [eleven, eleven]}, e)
    ten = _rows([perms[i % 10] for i in range(40)])
    _fails(cj._random_and_reproducible, {"out": [ten, ten]}, e,
           "only 10 different relabellings in 40 tasks: draw one permutation per task")
    zero_first = [p for p in (list(q) for q in itertools.permutations(range(5))) if p[0] == 0][:24]
    z = _rows([zero_first[i % 24] for i in range(40)])
    _fails(cj._random_and_reproducible, {"out": [z, z]}, e, "class 0 always keeps label 0: the labels are not shuffled")
    one_moved = _rows([zero_first[i % 24] for i in range(39)] + [[1, 0, 2, 3, 4]])
    cj._random_and_reproducible({"out": [one_moved, one_moved]}, e)


def test_any_order_check_messages():
    task = _task([[2, 0, 1], [1, 2, 0]], [[0, 1, 2], [2, 1, 0]])
    e = {"in": task, "out": [None, None, None]}
    a = _task([[0, 1, 2], [1, 2, 0]], [[1, 2, 0], [2, 1, 0]])         # per task: 2->0, 0->1, 1->2; 1->1, 2->2, 0->0
    c = _task([[1, 2, 0], [0, 1, 2]], [[2, 0, 1], [2, 1, 0]])
    cj._any_order_check({"out": [a, a, c]}, e)
    _fails(cj._any_order_check, {"out": [a, c, c]}, e, "the same generator seed must give the same labels")
    a2 = [a[0], a[1], a[2], torch.tensor([[1, 2, 0], [0, 2, 1]])]
    _fails(cj._any_order_check, {"out": [a, a2, c]}, e, "the same generator seed must give the same labels")
    _fails(cj._any_order_check, {"out": [a, a, a2]}, e,
           "another generator seed gave the same labels: draw the permutations from the generator")
    bad = _task([[0, 1, 2], [1, 2, 0]], [[1, 2, 0], [0, 2, 2]])
    _fails(cj._any_order_check, {"out": [bad, bad, c]}, e, "task 1: class 2 got two labels (support and query must agree)")
    four = _task([[3, 0, 1, 2]], [[3]])                       # n_way is the largest support label + 1
    _fails(cj._any_order_check, {"out": [four, four, four]}, {"in": _task([[0, 1, 2, 3]], [[0]]), "out": [None] * 3},
           "another generator seed gave the same labels: draw the permutations from the generator")


def test_step_checks_messages():
    e = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64), "b": torch.tensor([3.0], dtype=torch.float64)}
    cj._step_keys_and_values({"w": e["w"] + 0.5e-12, "b": e["b"]}, e)
    _fails(cj._step_keys_and_values, [1], e, "metasgd_step should return a dict: parameter name -> new tensor")
    _fails(cj._step_keys_and_values, {"w": e["w"]}, e, "keys ['w'], expected ['b', 'w']: one entry per parameter")
    _fails(cj._step_keys_and_values, {**e, "c": e["b"]}, e,
           "keys ['b', 'c', 'w'], expected ['b', 'w']: one entry per parameter")
    _fails(cj._step_keys_and_values, {"w": e["w"].float(), "b": e["b"]}, e,
           "w: keep the parameters' dtype (torch.float64), got torch.float32")
    _fails(cj._step_keys_and_values, {"w": e["w"], "b": [3.0]}, e, "b = θ − α ⊙ g (one rate per element): expected a tensor, got list")
    _fails(cj._step_keys_and_values, {"w": e["w"] + 1, "b": e["b"]}, e,
           "w = θ − α ⊙ g (one rate per element) differs: max abs error 1 at [0] (got 2, expected 1; "
           "tolerance atol=1e-12, rtol=1e-10)")

    hand = {"new": e, "params after the call": {"w": torch.tensor([1.0])}}
    cj._step_hand(hand, hand)
    for got in ([1], {"new": None}, {}):
        _fails(cj._step_hand, got, hand, "metasgd_step should return a dict: parameter name -> new tensor")
    _fails(cj._step_hand, {"new": {"w": e["w"]}, "params after the call": hand["params after the call"]}, hand,
           "keys ['w'], expected ['b', 'w']: one entry per parameter")
    _fails(cj._step_hand, {"new": e, "params after the call": {"w": torch.tensor([1.0 + 1e-7])}}, hand,
           "params after the call (metasgd_step must not change its inputs)['w'] differs: max abs error 1.19e-07 at [0] "
           "(got 1, expected 1; tolerance atol=0, rtol=0)")

    fl = {"flows": True, "d/d rate": torch.tensor([-0.5]), "d/d gradient": torch.tensor([-0.1])}
    cj._step_flows({**fl, "d/d rate": fl["d/d rate"] + 0.9e-6}, fl)
    for got in ([1], {"flows": True}, {**fl, "x": 1}):
        _fails(cj._step_flows, got, fl, "the measurement did not come back")
    for flows in (False, None, 1):
        _fails(cj._step_flows, {**fl, "flows": flows}, fl,
               "the new parameters must depend on the rates: tensor operations, no .detach()")
    _fails(cj._step_flows, {**fl, "d/d rate": None}, fl,
           "the result must depend on the rates and on the gradients (d/d rate is missing)")
    _fails(cj._step_flows, {**fl, "d/d gradient": None}, fl,
           "the result must depend on the rates and on the gradients (d/d gradient is missing)")
    _fails(cj._step_flows, {**fl, "d/d rate": fl["d/d rate"] + 1}, fl,
           "d/d rate of θ − α ⊙ g (should be −g) differs: max abs error 1 at [0] (got 0.5, expected -0.5; "
           "tolerance atol=1e-06, rtol=1e-06)")
    _fails(cj._step_flows, {**fl, "d/d gradient": fl["d/d gradient"] + 1}, fl,
           "d/d gradient of θ − α ⊙ g (should be −α) differs: max abs error 1 at [0] (got 0.9, expected -0.1; "
           "tolerance atol=1e-06, rtol=1e-06)")


# ------------------------------------------------------------------ references and registration

def test_shuffle_labels_reference_is_one_permutation_per_task():
    ref = cj.references()["shuffle_labels"]
    ys = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    yq = torch.tensor([[1, 1, 0], [0, 2, 2]])
    task = Task(torch.zeros(2, 4, 1), ys, torch.ones(2, 3, 1), yq)
    out = ref(task, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(3, generator=g), torch.randperm(3, generator=g)]
    assert isinstance(out, Task) and out.x_support is task.x_support and out.x_query is task.x_query
    for b in range(2):
        assert out.y_support[b].tolist() == [int(perms[b][k]) for k in ys[b]]
        assert out.y_query[b].tolist() == [int(perms[b][k]) for k in yq[b]]
    one = Task(torch.zeros(1, 2, 1), torch.tensor([[0, 1]]), torch.zeros(1, 2, 1), torch.tensor([[1, 1]]))
    out = ref(one, torch.Generator().manual_seed(0))
    assert out.y_support.shape == (1, 2) and sorted(out.y_support[0].tolist()) == [0, 1]


def test_references_and_registration():
    from metalib import maml, protomaml
    refs = cj.references()
    assert set(refs) == {"proto_head", "any_way_rows", "shuffle_labels", "metasgd_step"}
    assert refs["proto_head"] is protomaml.proto_head and refs["metasgd_step"] is maml.sgd_step
    assert refs["any_way_rows"]() == {"finetune", "matching", "protonet", "protomaml"}
    assert judge_for("09_choosing_a_meta_learner") is cj.JUDGE
    assert cj.JUDGE.assignment == "09_choosing_a_meta_learner" and cj.JUDGE.make_probes is cj.make_probes
    assert cj.JUDGE.references is cj.references and cj.JUDGE.unavailable == {}
    assert cj.JUDGE.guarded == {"metalib.protomaml": ("proto_head",), "metalib.maml": ("sgd_step",)}
