"""metalib.grading.judges.black_box (notebook 02's judge): what `make mutants MODULES=grading/ --only
'metalib.grading.judges.black_box.*'` showed untested by the fast grading tests (tests/test_grading.py grades
notebooks in sandboxed kernels, far too slow to run per mutant): the hidden draws of `make_probes` and the
exact probe code they produce, each probe's question, visibility, check and tolerances, every branch and
exact message of the sequence checks (`_seq`, `_in_order`, `_keeps_labels`, `_uniform` with its 0.6-1.4
band, `_one_task`) and of the loss check (`_no_support_gradient`), the prediction checks' messages, and
the references (the sequence in the given order, the query-only cross-entropy, log N).

Every expected value is written out by hand or computed by a plain loop (one-hot rows, a cross-entropy
averaged over the query positions); nothing starts a kernel or a sandbox.
"""
from __future__ import annotations

import itertools
import math
import random
import re

import pytest
import torch

from metalib.grading.judges import black_box as j
from metalib.grading.judges import common
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails  # noqa: E402


NONE = ("build_sequence's result is None: the function returned nothing. Did you finish the exercise "
        "(replace `...`) and `return` (seq, y_order)?")


def _onehot(y, n):
    out = torch.zeros(*y.shape, n)
    for idx in itertools.product(*(range(s) for s in y.shape)):
        out[idx + (int(y[idx]),)] = 1
    return out


# ---------------------------------------------------------------------------- _seq, _in_order

def test_seq_messages():
    a, b = torch.zeros(2), torch.ones(2)
    assert j._seq([a, b]) == [a, b]
    with pytest.raises(AssertionError) as err:
        j._seq(None)
    assert str(err.value) == NONE
    with pytest.raises(AssertionError) as err:
        j._seq(None, "X")
    assert str(err.value) == NONE.replace("build_sequence's result", "X")
    for out in ("tuple", (a, b), [a, [1.0]], [torch.nn.Parameter(a), b]):
        with pytest.raises(AssertionError) as err:
            j._seq(out)
        assert str(err.value) == "return (seq, y_order): two tensors"


def test_in_order():
    seq, y = torch.arange(12.0).view(1, 3, 4), torch.tensor([[0, 1]])
    j._in_order([seq + 0.9e-5, y.clone()], (seq, y))       # tensors' default tolerance, atol 1e-5 at 0
    with pytest.raises(AssertionError, match=r"^seq \(no generator: the given order\) differs"):
        j._in_order([seq + 1.1e-5 * (1 + seq), y], (seq, y))
    wrong = "y_order should be the support labels (in the given order without a generator)"
    _fails(j._in_order, [seq, torch.tensor([[1, 0]])], (seq, y), wrong)
    _fails(j._in_order, [seq, torch.tensor([0, 1])], (seq, y), wrong)
    _fails(j._in_order, [seq, torch.tensor([[0, 1, 0]])], (seq, y), wrong)
    _fails(j._in_order, None, (seq, y), NONE)


# ---------------------------------------------------------------------------- _keeps_labels

def _shuffled(perms=((1, 3, 0, 2), (2, 0, 3, 1)), dtype=torch.float32):
    """A valid shuffle of 2 tasks of 4 support rows (labels 0 0 1 1, 2-way, D = 3) and 2 queries."""
    g = torch.Generator().manual_seed(0)
    z_s, z_q = torch.randn(2, 4, 3, generator=g), torch.randn(2, 2, 3, generator=g)
    y_s = torch.tensor([0, 0, 1, 1]).expand(2, 4)
    order = torch.tensor(perms)
    zs = torch.stack([z_s[b, order[b]] for b in range(2)])
    ys = torch.stack([y_s[b, order[b]] for b in range(2)])
    seq = torch.cat([torch.cat([zs, _onehot(ys, 2)], -1), torch.cat([z_q, torch.zeros(2, 2, 2)], -1)], 1).to(dtype)
    return {"out": [seq, ys.clone()]}, {"z_s": z_s, "y_s": y_s, "z_q": z_q, "n": 2}


def test_keeps_labels_passes_a_valid_shuffle():
    got, e = _shuffled()
    j._keeps_labels(got, e)
    j._keeps_labels(_shuffled(dtype=torch.float64)[0], e)        # compared in the expected dtype


def test_keeps_labels_messages():
    got, e = _shuffled()
    _fails(j._keeps_labels, got["out"], e, NONE)
    _fails(j._keeps_labels, {}, e, NONE)
    seq, y = got["out"]
    shape = "seq should have shape (2, 6, 5) and y_order (2, 4), got "
    _fails(j._keeps_labels, {"out": [seq[:, :5], y]}, e, shape + "(2, 5, 5) and (2, 4)")
    _fails(j._keeps_labels, {"out": [seq[..., :4], y]}, e, shape + "(2, 6, 4) and (2, 4)")
    _fails(j._keeps_labels, {"out": [seq[:1], y]}, e, shape + "(1, 6, 5) and (2, 4)")
    _fails(j._keeps_labels, {"out": [seq, y[:, :3]]}, e, shape + "(2, 6, 5) and (2, 3)")
    _fails(j._keeps_labels, {"out": [seq, y[:1]]}, e, shape + "(2, 6, 5) and (1, 4)")
    bad = seq.clone()
    bad[1, 2, 1] += 0.1
    _fails(j._keeps_labels, {"out": [bad, y]}, e, "task 1 position 2 is not a support row")
    bad = seq.clone()
    bad[0, 3, 3:] = torch.tensor([1.0, 0.0]) if y[0, 3] == 1 else torch.tensor([0.0, 1.0])
    _fails(j._keeps_labels, {"out": [bad, y]}, e, "task 0 position 3: the one-hot label must stay with its image")
    y2 = y.clone()
    y2[1, 0] = 1 - y2[1, 0]
    _fails(j._keeps_labels, {"out": [seq, y2]}, e, "task 1 position 0: the one-hot label must stay with its image")
    bad = seq.clone()
    bad[1, 3, 3 + int(1 - y[1, 3])] = 0.5
    _fails(j._keeps_labels, {"out": [bad, y]}, e, "support labels are one-hot")
    bad = seq.clone()
    bad[1, 5, 4] = 0.01
    _fails(j._keeps_labels, {"out": [bad, y]}, e, "query labels must be zero")
    bad = seq.clone()
    bad[0, 4, 0] += 0.01
    _fails(j._keeps_labels, {"out": [bad, y]}, e, "queries keep their order, after the support rows")
    same = ((0, 1, 2, 3), (0, 1, 2, 3))
    _fails(j._keeps_labels, _shuffled(same)[0], e, "with a generator the support should be shuffled")
    ident_one = ((0, 1, 2, 3), (2, 0, 3, 1))                     # one task unshuffled is fine
    j._keeps_labels(_shuffled(ident_one)[0], e)
    # y_order (0, 0, 1, 1) in both tasks, from different row orders: still the same label order
    _fails(j._keeps_labels, _shuffled(((1, 0, 3, 2), (0, 1, 3, 2)))[0], e, "each task should get its own order")


# ---------------------------------------------------------------------------- _uniform

def _uniform_got(orders, S=3, D=2, other=None):
    """Tasks whose support rows (row r: features (r, 7), label r) sit in the given orders."""
    B = len(orders)
    rows = torch.tensor(orders)
    seq = torch.zeros(B, S + 1, D + S)
    seq[:, :S, 0] = rows.float() + 0.2          # rounded to the row's index
    seq[:, :S, 1:D] = 7
    seq[:, :S, D:] = _onehot(rows, S)
    out = {"out": [seq, rows.clone()], "again": [seq.clone(), rows.clone()],
           "other": other if other is not None else [seq.flip(0), rows.flip(0)]}
    return out, {"B": B, "S": S, "D": D}


PERMS3 = list(itertools.permutations(range(3)))


def _orders(counts):
    return [p for p, c in zip(PERMS3, counts) for _ in range(c)]


def test_uniform_passes_orders_within_the_band():
    j._uniform(*_uniform_got(_orders([10] * 6)))
    j._uniform(*_uniform_got(_orders([7, 13, 10, 10, 10, 10])))     # 0.6 * 10 < 7, 13 < 1.4 * 10


@pytest.mark.parametrize("counts, low, high", [([6, 14, 10, 10, 10, 10], 6, 14), ([6, 12, 10, 10, 11, 11], 6, 12),
                                               ([8, 14, 10, 10, 9, 9], 8, 14), ([12, 12, 12, 12, 12, 0], 12, 12)])
def test_uniform_band_edges(counts, low, high):
    got, e = _uniform_got(_orders(counts))
    n = sum(1 for c in counts if c)
    _fails(j._uniform, got, e, "each of the 6 orders of 3 support rows should be about equally likely (about 10 of 60 "
                               f"tasks each); {n} orders occurred, from {low} to {high} times")


def test_uniform_messages():
    got, e = _uniform_got(_orders([10] * 6))
    _fails(j._uniform, [got["out"]], e, "build_sequence's results did not come back")
    for k in ("out", "again", "other"):
        _fails(j._uniform, {**got, k: None}, e, NONE)
    seq, y = got["out"]
    shape = "seq should have shape (60, 4, 5), got "
    _fails(j._uniform, {**got, "out": [seq[:, :3], y]}, e, shape + "(60, 3, 5)")
    _fails(j._uniform, {**got, "out": [seq[..., :4], y]}, e, shape + "(60, 4, 4)")
    _fails(j._uniform, {**got, "out": [seq[:59], y]}, e, shape + "(59, 4, 5)")
    _fails(j._uniform, {**got, "out": [seq, y[:, :2]]}, e, shape + "(60, 4, 5)")
    _fails(j._uniform, {**got, "out": [seq, y[:59]]}, e, shape + "(60, 4, 5)")
    same = ("the same generator seed must give the same sequences: draw every random number from `generator`")
    bad = seq.clone()
    bad[0, 3, 0] = 1
    _fails(j._uniform, {**got, "again": [bad, y]}, e, same)
    _fails(j._uniform, {**got, "again": [seq[:, :3], y]}, e, same)
    _fails(j._uniform, {**got, "again": [seq, y.flip(0)]}, e, same)
    keep = "each support row must keep its own label, in seq and in y_order"
    y2 = y.flip(0)
    _fails(j._uniform, {**got, "out": [seq, y2], "again": [seq, y2]}, e, keep)
    bad = seq.clone()
    bad[5, 0, 2:] = torch.tensor([0.0, 0.0, 1.0]) if y[5, 0] != 2 else torch.tensor([1.0, 0.0, 0.0])
    _fails(j._uniform, {**got, "out": [bad, y], "again": [bad, y]}, e, keep)
    # rows (0, 0, 1) in one task: labels and y_order agree, but it is no permutation
    orders = _orders([10] * 6)
    orders[0] = (0, 0, 1)
    _fails(j._uniform, *_uniform_got(orders), "each task's support must be a permutation of its rows")
    _fails(j._uniform, {**got, "other": [seq.clone(), y]}, e, "another seed should give other orders")
    j._uniform({**got, "other": [seq[:, :3], y]}, e)                     # another shape is another order


# ---------------------------------------------------------------------------- _one_task, _other_sizes

def _one(n=4, d=3, order=(2, 0, 3, 1)):
    z_q = torch.randn(1, 1, d, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([order])
    seq = torch.cat([torch.cat([torch.randn(1, n, d), _onehot(y, n)], -1), torch.cat([z_q, torch.zeros(1, 1, n)], -1)], 1)
    return {"out": [seq, y]}, {"z_q": z_q}


def test_one_task():
    got, e = _one()
    j._one_task(got, e, 4, 3)
    j._other_sizes(4, 3)(got, e)
    _fails(lambda g, x: j._one_task(g, x, 4, 3), [got["out"]], e, NONE)
    seq, y = got["out"]
    _fails(j._other_sizes(5, 3), got, e, "seq should have shape (1, 5 + 1, 3 + 5), got (1, 5, 7)")
    _fails(j._other_sizes(4, 2), got, e, "seq should have shape (1, 4 + 1, 2 + 4), got (1, 5, 7)")
    with pytest.raises(AssertionError) as err:
        j._one_task({"out": [torch.cat([seq, seq]), y]}, e, 4, 3)
    assert str(err.value) == "seq should have shape (1, 4 + 1, 3 + 4), got (2, 5, 7)"
    match = "the one-hot labels in seq should match y_order"
    for y2 in (y[0], torch.tensor([[2, 0, 3, 1, 0]]), torch.tensor([[2, 0, 1, 3]])):
        with pytest.raises(AssertionError) as err:
            j._one_task({"out": [seq, y2]}, e, 4, 3)
        assert str(err.value) == match
    bad, _ = _one(order=(2, 0, 2, 1))
    with pytest.raises(AssertionError) as err:
        j._one_task(bad, e, 4, 3)
    assert str(err.value) == "y_order should be a permutation of the 4 support labels"
    last = "the query comes last, with its embedding and an all-zero label"
    for where in ((4, 2), (4, 3), (4, 6)):
        s = seq.clone()
        s[(0, *where)] += 0.5
        with pytest.raises(AssertionError) as err:
            j._one_task({"out": [s, y]}, e, 4, 3)
        assert str(err.value) == last


# ---------------------------------------------------------------------------- _no_support_gradient

def _loss(s=2):
    grad = torch.zeros(2, 5, 3)
    grad[:, s:] = torch.tensor([0.25, -0.125, -0.125])      # sums to 0 over the classes, as a cross-entropy's does
    return {"value": torch.tensor(1.5), "grad": grad}, {"value": torch.tensor(1.5), "grad": grad.clone(), "n_support": s}


def test_no_support_gradient():
    got, e = _loss()
    for compare_grad in (False, True):
        j._no_support_gradient(compare_grad)(got, e)
    check = j._no_support_gradient(False)
    _fails(check, [got], e, "the loss did not come back")
    _fails(check, {"grad": got["grad"]}, e, f"query_only_loss is None: {common.NOTHING}")
    _fails(check, {**got, "value": "float"}, e, "query_only_loss should return a tensor, got float")
    check({**got, "value": torch.tensor(1.5 + 0.9e-5)}, e)
    with pytest.raises(AssertionError, match="^query-only loss differs"):
        check({**got, "value": torch.tensor(1.5 + 3e-5)}, e)
    diff = "the loss should be differentiable with respect to the logits"
    for grad in (None, got["grad"].tolist(), got["grad"][:, :4], got["grad"][:1]):
        _fails(check, {**got, "grad": grad}, e, diff)
    g = got["grad"].clone()
    g[1, 1, 0] = 1e-3                                          # the last support position
    _fails(check, {**got, "grad": g}, e, "the support positions must not receive a gradient")
    g = got["grad"].clone()
    g[0, 2] = 0                                                # the first query position
    _fails(check, {**got, "grad": g}, e, "every query position must receive a gradient")
    g = got["grad"].clone()
    g[1, 4] = 0                                                # the last query position
    _fails(check, {**got, "grad": g}, e, "every query position must receive a gradient")
    g = got["grad"] * 2                                        # a wrong gradient: only compared when asked
    check({**got, "grad": g}, e)
    with pytest.raises(AssertionError, match=r"^d loss / d logits differs"):
        j._no_support_gradient(True)({**got, "grad": g}, e)
    got0, e0 = _loss(s=0)
    j._no_support_gradient(True)(got0, e0)


def test_gradient_probe_code():
    assert j._gradient(5, 2, 6, 3, 1) == j.HEAD + (
        "g = G(5)\nlogits = torch.randn(2, 6, 3, generator=g, requires_grad=True)\n"
        "targets = torch.randint(0, 3, (2, 6), generator=g)\n"
        "result = {**_lg(query_only_loss(logits, targets, 1), logits), 'n_support': 1}\n")


# ---------------------------------------------------------------------------- make_probes

def test_probes_draw_their_inputs_as_documented():
    values = [3, 2,                 # bn, bk
              4, 5, 6,              # in_order: B, D, M
              11, 4,                # n_other, d_other
              2, 3, 6, 7, 4, 1, 16, 2, 17,    # loss sizes
              5, 8, 20,             # ns
              2, 111, 222,          # d_uni, s1, s2
              333, 444,             # other sizes: G seeds
              555,                  # in order other sizes
              666,                  # loss matches metalib
              777, 3, 9, 4, 5]      # gradient: seed, b, t, n, s
    rng = _ScriptedRng(*values)
    probes = j.make_probes(rng)
    assert rng.values == []
    R = ("randrange", 10**6)
    assert rng.calls == [("randint", 2, 6), ("randint", 1, 4), ("randint", 1, 4), ("randint", 2, 8), ("randint", 1, 6),
                         ("randint", 10, 20), ("randint", 3, 9),
                         ("randint", 1, 3), ("randint", 2, 5), ("randint", 5, 12), ("randint", 5, 16), ("randint", 3, 6),
                         ("randint", 1, 3), ("randint", 15, 25), ("randint", 1, 4), ("randint", 15, 20),
                         ("randint", 3, 6), ("randint", 7, 12), ("randint", 15, 50),
                         ("randint", 1, 3), R, R, R, R, R, R,
                         R, ("randint", 1, 5), ("randint", 4, 12), ("randint", 2, 8), ("randint", 1, 8)]
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q1", "test_sequence_without_shuffle", False), ("q1", "test_shuffle_keeps_labels_with_their_images", False),
        ("q1", "test_sequence_shuffle_is_uniform_and_reproducible", True), ("q1", "test_sequence_other_sizes", True),
        ("q1", "test_sequence_in_order_other_sizes", True),
        ("q2", "test_query_only_loss_value", False), ("q2", "test_no_gradient_at_support_positions", False),
        ("q2", "test_query_only_loss_matches_metalib", True), ("q2", "test_query_only_loss_gradient_other_sizes", True),
        ("q3", "test_plateau_loss_two_way", False), ("q3", "test_plateau_loss_more_ways", True),
        ("q4", "test_sure_to_improve_is_a_set_of_names", False), ("q4", "test_sure_to_improve_is_right", True)]
    H = j.HEAD
    sizes = "[(2, 1, 1, 2), (3, 6, 7, 4), (1, 16, 2, 17)]"
    assert [p.code for p in probes] == [
        H + "g = G(0)\nz_s, z_q = torch.randn(2, 6, 5, generator=g), torch.randn(2, 4, 5, generator=g)\n"
            "y_s = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, 6)\n"
            "result = _pair(build_sequence(z_s, y_s, z_q, 3))\n",
        H + "g = G(1)\nB, N, K, D = 8, 3, 2, 4\n"
            "z_s, z_q = torch.randn(B, N * K, D, generator=g), torch.randn(B, 5, D, generator=g)\n"
            "y_s = torch.arange(N).repeat_interleave(K).expand(B, N * K)\n"
            "result = {'out': _pair(build_sequence(z_s, y_s, z_q, N, G(2))), 'z_s': z_s, 'y_s': y_s, 'z_q': z_q, 'n': N}\n",
        H + "B, S, D = 4800, 4, 2\n"
            "z_s = torch.arange(S, dtype=torch.float32).view(1, S, 1).expand(B, S, D).contiguous()\n"
            "y_s = torch.arange(S).expand(B, S)\nz_q = torch.zeros(B, 1, D)\n"
            "result = {k: _pair(build_sequence(z_s, y_s, z_q, S, G(s))) for k, s in (('out', 111), ('again', 111), "
            "('other', 222))}\n",
        H + "g = G(333)\n"
            "z_s, z_q = torch.randn(1, 11, 4, generator=g), torch.randn(1, 1, 4, generator=g)\n"
            "y_s = torch.randperm(11, generator=g)[None]\n"
            "result = {'out': _pair(build_sequence(z_s, y_s, z_q, 11, G(444))), 'z_q': z_q}\n",
        H + "B, N, K, D, M = (4, 3, 2, 5, 6)\n"
            "g = G(555)\n"
            "z_s, z_q = torch.randn(B, N * K, D, generator=g), torch.randn(B, M, D, generator=g)\n"
            "y_s = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(B)])\n"
            "result = _pair(build_sequence(z_s, y_s, z_q, N))\n",
        H + "g = G(0)\nlogits, targets = torch.randn(3, 7, 4, generator=g), torch.randint(0, 4, (3, 7), generator=g)\n"
            "result = query_only_loss(logits, targets, 4)\n",
        j._gradient(1, 2, 6, 3, 2),
        H + "g = G(666)\nresult = []\n"
            f"for B, S, M, N in {sizes}:\n"
            "    logits, targets = torch.randn(B, S + M, N, generator=g), torch.randint(0, N, (B, S + M), generator=g)\n"
            "    result.append(query_only_loss(logits, targets, S))\n",
        j._gradient(777, 3, 9, 4, 5),
        common.HELPERS + "result = [_num(plateau_loss(*a)) for a in [(2,)]]\n",
        common.HELPERS + "result = [_num(plateau_loss(*a)) for a in [(5,), (8,), (20,)]]\n",
        common.HELPERS + "result = _names(sure_to_improve())\n", common.HELPERS + "result = _names(sure_to_improve())\n"]
    assert all((p.atol, p.rtol) == (1e-10, 1e-8) for p in probes)
    c = [p.check for p in probes]
    assert c[0] is j._in_order and c[1] is j._keeps_labels and c[4] is j._in_order
    # the other-sizes check knows n = 11, d = 4
    with pytest.raises(AssertionError, match=re.escape("seq should have shape (1, 11 + 1, 4 + 11), got (1, 5, 7)")):
        c[3](_one()[0], _one()[1])
    # the loss checks: names and tolerances (tensors' default atol 1e-5)
    one = torch.tensor(1.0)
    c[5](one + 0.9e-5, one)
    with pytest.raises(AssertionError, match="^query-only loss differs"):
        c[5](one + 3e-5, one)
    c[7]([one, one], [one, one + 0.9e-5])
    with pytest.raises(AssertionError, match="^" + re.escape(f"query-only loss for (B, S, M, N) in {sizes}[1] differs")):
        c[7]([one, one], [one, one + 3e-5])
    got, e = _loss()
    c[6]({**got, "grad": got["grad"] * 2}, e)                 # public: the gradient's values are not compared
    with pytest.raises(AssertionError, match=r"^d loss / d logits differs"):
        c[8]({**got, "grad": got["grad"] * 2}, e)
    c[8](got, e)
    # plateau losses: within 1e-4 of log N, with the question's hint
    c[9]([math.log(2) + 0.99e-4], [math.log(2)])
    _fails(c[9], [math.log(2) + 1.01e-4], [math.log(2)],
           f"plateau_loss(2) = {math.log(2) + 1.01e-4:.6g}: on 2-way tasks a learner that ignores the support set "
           "predicts 1/2 for each class; its cross-entropy is -log(1/2)")
    want = [math.log(5), math.log(8), math.log(20)]
    c[10]([want[0], want[1] - 0.99e-4, want[2]], want)
    _fails(c[10], [want[0], want[1] - 1.01e-4, want[2]], want,
           f"plateau_loss(8) = {want[1] - 1.01e-4:.6g}: with a uniform prediction the probability of the true class is "
           "1/N, and the cross-entropy is minus its log")
    # predictions: a set of names; right only for {'prototype'}
    right = {"type": "set", "items": ["prototype"]}
    for k in (11, 12):
        c[k](right, right)
        _fails(c[k], {"type": "list", "items": []}, right, "sure_to_improve() should return a set of names, got list")
        _fails(c[k], {"type": "set", "items": ["rnn"]}, right, "['rnn'] are not among the names ['lstm', 'prototype']")
    c[11]({"type": "set", "items": ["lstm"]}, right)
    _fails(c[12], {"type": "set", "items": ["lstm", "prototype"]}, right,
           "not quite: a class mean over more examples is a better estimate for any K, but the LSTM was trained only on "
           "sequences with one example per class, and nothing guarantees what it does with longer ones")


def test_uniform_probe_check_knows_its_sizes():
    rng = random.Random(0)
    probe = {p.name: p for p in j.make_probes(rng)}["test_sequence_shuffle_is_uniform_and_reproducible"]
    D = int(probe.code.split("B, S, D = 4800, 4, ")[1].split("\n")[0])
    perms = list(itertools.permutations(range(4)))
    got, _ = _uniform_got([p for p in perms for _ in range(200)], S=4, D=D)
    probe.check(got, None)
    got, _ = _uniform_got([p for p in perms for _ in range(200)][:4799] + [perms[1]], S=4, D=D)
    probe.check(got, None)
    bad, _ = _uniform_got([p for p in perms for _ in range(199)], S=4, D=D)
    with pytest.raises(AssertionError, match=r"^seq should have shape \(4800, 5, "):
        probe.check(bad, None)


def test_judge():
    assert j.JUDGE.assignment == "02_black_box" and len(j.JUDGE.probes(random.Random(2))) == 13
    assert j.JUDGE.guarded == {"metalib.blackbox": ("build_sequence", "query_loss")}


# ---------------------------------------------------------------------------- references

def test_references():
    ref = j.references()
    assert set(ref) == {"build_sequence", "query_only_loss", "plateau_loss", "sure_to_improve"}
    assert ref["plateau_loss"](3) == math.log(3) and ref["sure_to_improve"]() == {"prototype"}
    g = torch.Generator().manual_seed(0)
    z_s, z_q = torch.randn(2, 4, 3, generator=g), torch.randn(2, 1, 3, generator=g)
    y_s = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]])
    seq, y = ref["build_sequence"](z_s, y_s, z_q, 2)                  # no generator: the given order
    want = torch.cat([torch.cat([z_s, _onehot(y_s, 2)], -1), torch.cat([z_q, torch.zeros(2, 1, 2)], -1)], 1)
    assert torch.equal(seq, want) and torch.equal(y, y_s)
    seq, y = ref["build_sequence"](z_s, y_s, z_q, 2, torch.Generator().manual_seed(3))
    assert not torch.equal(seq[:, :4], want[:, :4])                   # the generator shuffles
    logits = torch.randn(2, 5, 3, generator=g)
    targets = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    for s in (1, 3):
        total, n = 0.0, 0
        for b in range(2):
            for t in range(s, 5):
                row = logits[b, t].double()
                total += -(row[targets[b, t]] - row.exp().sum().log()).item()
                n += 1
        assert abs(ref["query_only_loss"](logits, targets, s).item() - total / n) < 1e-6
