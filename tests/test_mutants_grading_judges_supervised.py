"""Unit tests for `metalib.grading.judges.supervised` (notebook 01's judge).

`make mutants` (tools/mutants.py grading/ --only 'metalib.grading.judges.supervised.*') showed the
judge's checks, messages, probe code and hidden-input draws untested outside full notebook runs:
the messages of `_parts`/`_valid`/`_generator`/`_drawings`/`_uniform`/`_objective`, the drawing
and class counting, the probe snippets `_images`/`_linear`/`_support_only`, the ranges
`make_probes` draws from, the tolerances and hints of the number questions, and the references.
Each test checks against an exact expected message or a value computed by hand or by a plain loop.
"""
from __future__ import annotations

import random

import pytest
import torch

from metalib.grading.judges import common
from metalib.grading.judges import supervised as sv
from judge_fakes import RecordingRng as _Recording, fails as _fails  # noqa: E402

NONE_TASK = ("is None: the function returned nothing. Did you finish the exercise (replace `...`) and "
             "`return` a Task?")


def _coded(c, m):
    images = torch.zeros(c, m, 4, 4, dtype=torch.uint8)
    for i in range(c):
        for j in range(m):
            images[i, j] = m * i + j
    return images


def _ep(images, classes, sup, qry):
    """A hand-made episode: class classes[i] has label i, drawings sup[i] (support) and qry[i] (query)."""
    def part(draws):
        x = torch.stack([images[c, d] for c, ds in zip(classes, draws) for d in ds]).float().div(255).unsqueeze(1)
        return x, torch.tensor([i for i, ds in enumerate(draws) for _ in ds])
    xs, ys = part(sup)
    xq, yq = part(qry)
    return [xs, ys, xq, yq]


def _head():
    ns = {}
    exec(sv.HEAD, ns)
    return ns


# ---------------------------------------------------------------------------------------------- probe code


def test_head_helpers():
    assert sv.HEAD.startswith(common.HELPERS)
    ns = _head()
    from metalib import Task
    t = Task(torch.zeros(1), torch.ones(1), torch.zeros(2), torch.ones(2))
    got = ns["_ep"](t)
    assert isinstance(got, list) and len(got) == 4 and torch.equal(got[3], torch.ones(2))
    assert ns["_ep"](None) is None and ns["_ep"](5) == "int"
    assert ns["_vg"](None, None) == {"value": None, "grad": None}
    assert ns["_vg"](1.5, None) == {"value": "float", "grad": None}
    theta = torch.tensor(3.0, requires_grad=True)
    out = ns["_vg"](theta ** 2, theta)
    assert not out["value"].requires_grad and out["value"].item() == 9.0 and out["grad"].item() == 6.0
    assert ns["_vg"](torch.tensor(2.0), theta) == {"value": torch.tensor(2.0), "grad": None}
    assert torch.equal(torch.rand(3, generator=ns["G"](4)), torch.rand(3, generator=torch.Generator().manual_seed(4)))


def test_images_code():
    assert sv._images(3, 4, 5, 6) == \
        "images = torch.randint(0, 256, (3, 4, 5, 5), dtype=torch.uint8, generator=G(6))\n"


def test_linear_code():
    assert sv._linear(7, 2, 3, 4, [1.5, -2.0], 0.25, 0.5, -1.0) == sv.HEAD + (
        "g = G(7)\n"
        "xs, xq = torch.randn(2, 3, 1, generator=g), torch.randn(2, 4, 1, generator=g)\n"
        "w = torch.tensor([1.5, -2.0]).view(2, 1, 1)\n"
        "tasks = Task(xs, xs * w, xq, xq * w + -1.0)\n"
        "adapt = lambda th, x, y: th - 0.25 * 2 * (x * (x * th - y)).mean()\n"
        "loss = lambda phi, x, y: ((x * phi - y) ** 2).mean()\n"
        "theta = torch.tensor(0.5, requires_grad=True)\n"
        "result = _vg(meta_objective(theta, tasks, adapt, loss), theta)\n")


def test_support_only_code():
    assert sv._support_only(7, 2, 3, 4, 5) == sv.HEAD + (
        "g = G(7)\n"
        "tasks = Task(torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, generator=g),\n"
        "             torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, generator=g))\n"
        "seen = []\n"
        "def adapt(theta, x, y):\n"
        "    seen.append([x.clone(), y.clone()])\n"
        "    return theta + y.mean()\n"
        "loss = lambda phi, x, y: ((x.sum(-1) + phi - y) ** 2).mean()\n"
        "theta = torch.tensor(-0.2, requires_grad=True)\n"
        "result = {**_vg(meta_objective(theta, tasks, adapt, loss), theta), 'seen': seen}\n")


# ---------------------------------------------------------------------------------------------- checks


def test_parts():
    _fails(lambda g, e: sv._parts(g, "ep"), None, None,
           "ep is None: the function returned nothing. Did you finish the exercise (replace `...`) and `return` a Task?")
    msg = "ep: expected Task(x_support, y_support, x_query, y_query) of tensors"
    x = torch.zeros(2)
    for bad in ((x, x, x, x), [x, x, x], [x, x, x, x, x], [x, x, x, 1.0], [x, torch.nn.Parameter(x), x, x], "abcd"):
        _fails(lambda g, e: sv._parts(g, "ep"), bad, None, msg)
    ok = [x, x, x, x]
    assert sv._parts(ok, "ep") is ok


def test_coded_images():
    got = sv._coded(3, 5)
    assert got.dtype == torch.uint8 and got.is_contiguous() and torch.equal(got, _coded(3, 5))


def test_valid():
    images = _coded(4, 5)
    check = sv._valid([(2, 1, 2), (3, 1, 1)])
    good = [_ep(images, [1, 3], [[0], [4]], [[1, 2], [0, 3]]), _ep(images, [2, 0, 1], [[0], [1], [2]], [[1], [2], [3]])]
    check({"images": images, "tasks": good}, {"images": images})
    msg = "sample_episode's episodes did not come back"
    for got in (good, {"tasks": tuple(good)}, {"tasks": good[:1]}, {"tasks": good + good[:1]}, {"images": images}):
        _fails(check, got, {"images": images}, msg)
    _fails(check, {"tasks": [good[0], None]}, {"images": images},
           "sample_episode(images (4, 5, 4, 4), n_way=3, k_shot=1, n_query=1): the episode " + NONE_TASK)
    _fails(check, {"tasks": [good[0], [1, 2, 3, 4]]}, {"images": images},
           "sample_episode(images (4, 5, 4, 4), n_way=3, k_shot=1, n_query=1): the episode: expected "
           "Task(x_support, y_support, x_query, y_query) of tensors")
    bad = list(good[0])
    bad[1] = bad[1].int()
    _fails(check, {"tasks": [bad, good[1]]}, {"images": images},
           "sample_episode(images (4, 5, 4, 4), n_way=2, k_shot=1, n_query=2): y_support should be int64 class "
           "ids, got torch.int32")
    with pytest.raises(AssertionError) as err:
        check({"tasks": [good[0], good[0]]}, {"images": images})     # the second episode is checked with its sizes
    assert str(err.value).startswith("sample_episode(images (4, 5, 4, 4), n_way=3, k_shot=1, n_query=1): ")


def _all_drawings(c=12, m=12):
    """Valid 2-way 1-shot 2-query episodes of the coded images that together use every drawing."""
    images = _coded(c, m)
    return [_ep(images, [i % (c - 1), c - 1], [[3 * i % m], [(3 * i + 1) % m]],
                [[(3 * i + 1) % m, (3 * i + 2) % m], [3 * i % m, (3 * i + 2) % m]]) for i in range(m // 3 + 1)]


def test_drawings():
    sv._drawings(_all_drawings(), 12, 12)
    sv._drawings(_all_drawings(5, 9), 5, 9)
    images = _coded(5, 6)
    few = [_ep(images, [4, 2], [[0], [1]], [[1, 2], [0, 2]]), _ep(images, [3, 4], [[2], [0]], [[0, 1], [1, 2]])]
    _fails(lambda g, e: sv._drawings(g, 5, 6), few, None,
           "drawings should be picked at random among all 6 of a class; over 2 episodes drawings [3, 4, 5] were never used")
    only0 = [_ep(images, [4, 2], [[5], [1]], [[1, 2], [3, 2]]), _ep(images, [3, 4], [[2], [4]], [[3, 1], [1, 2]])]
    _fails(lambda g, e: sv._drawings(g, 5, 6), only0, None,
           "drawings should be picked at random among all 6 of a class; over 2 episodes drawings [0] were never used")
    _fails(lambda g, e: sv._drawings(g, 5, 6), None, None, "an episode of the coded images " + NONE_TASK)
    _fails(lambda g, e: sv._drawings(g, 5, 6), [few[0], "x"], None,
           "an episode of the coded images: expected Task(x_support, y_support, x_query, y_query) of tensors")
    bad = list(few[0])
    bad[3] = bad[3].int()
    _fails(lambda g, e: sv._drawings(g, 5, 6), [bad], None, "y_query should be int64 class ids, got torch.int32")


def test_generator():
    images = _coded(4, 5)
    a = _ep(images, [0, 1], [[0], [1]], [[2, 3], [0, 4]])
    c = _ep(images, [2, 1], [[0], [1]], [[2, 3], [0, 4]])
    coded = _all_drawings()
    sv._generator({"a": a, "b": [t.clone() for t in a], "c": c, "coded": coded}, None)
    sv._generator({"a": a, "b": a, "c": _ep(images, [0, 1, 2], [[0], [1], [2]], [[1], [2], [3]]), "coded": coded}, None)
    same = "the same seed must give the same episode: draw every random number from `generator`"
    for i in range(4):
        b = list(a)
        b[i] = a[i].flip(0)
        _fails(sv._generator, {"a": a, "b": b, "c": c, "coded": coded}, None, same)
    _fails(sv._generator, {"a": a, "b": a, "c": [t.clone() for t in a], "coded": coded}, None,
           "different seeds should give different episodes")
    cc = list(a)
    cc[1] = cc[1].flip(0)
    _fails(sv._generator, {"a": a, "b": a, "c": cc, "coded": coded}, None,
           "different seeds should give different episodes")        # only x_support is compared
    for k in "abc":
        _fails(sv._generator, {**{"a": a, "b": a, "c": c, "coded": coded}, k: None}, None, f"episode {k} " + NONE_TASK)
    _fails(sv._generator, [a, a, c], None, "episode a " + NONE_TASK)
    _fails(sv._generator, {"a": a, "b": a, "c": c}, None, "an episode of the coded images " + NONE_TASK)
    _fails(sv._generator, {"a": a, "b": a, "c": c, "coded": coded[:2]}, None,
           "drawings should be picked at random among all 12 of a class; over 2 episodes drawings "
           "[6, 7, 8, 9, 10, 11] were never used")


def _uniform_got(labels, step=30):
    return [(torch.tensor(labels[i:i + 2], dtype=torch.float32) * step / 255).view(2, 1, 1, 1).expand(2, 1, 4, 4)
            for i in range(0, len(labels), 2)]


def test_uniform():
    e = {"classes": 5, "step": 30}
    ok = [0] * 11 + [1] * 11 + [2] * 11 + [3] * 10 + [4] * 7          # 25 episodes: low = 0.6 * 50 / 5 = 6
    sv._uniform(_uniform_got(ok), e)
    low = [0] * 11 + [1] * 11 + [2] * 11 + [3] * 11 + [4] * 6
    _fails(sv._uniform, _uniform_got(low), e, "every class should be picked about equally often (10 times each over "
                                              "25 2-way episodes), got counts [11, 11, 11, 11, 6]")
    seven = {"classes": 7, "step": 20}
    _fails(sv._uniform, _uniform_got([6, 6, 0, 1], 20), seven, "every class should be picked about equally often "
           "(1 times each over 2 2-way episodes), got counts [1, 1, 0, 0, 0, 0, 2]")
    big = _uniform_got([1, 2])[0].clone()
    big[1] = 1.0                                       # 255 is past the last class: counted as the last class
    _fails(sv._uniform, [big], e, "every class should be picked about equally often (0 times each over 1 2-way "
                                  "episodes), got counts [0, 1, 0, 0, 1]")
    for got in (None, [], _uniform_got(ok)[0]):
        _fails(sv._uniform, got, e, "sample_episode's episodes did not come back")
    shape = "x_support of a 2-way 1-shot episode should have shape (2, 1, H, W)"
    x = _uniform_got(ok)[0]
    for bad in (x[:, 0], torch.cat([x, x[:1]]), torch.nn.Parameter(x.clone()), x.tolist(), x[None, 0]):
        _fails(sv._uniform, _uniform_got(ok)[:3] + [bad], e, shape)


def test_bad_sizes_messages():
    check = sv._bad_sizes([(5, 1, 1), (2, 15, 6)], (4, 20, 28, 28))
    e = ["ValueError", "ValueError"]  # what the references return
    check(["ValueError", "ValueError"], e)
    _fails(check, ["ValueError", "nothing"], e,
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(2, 15, 6)) should raise ValueError, returned")
    _fails(check, ["IndexError", "ValueError"], e,
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(5, 1, 1)) should raise ValueError, "
           "raised IndexError")
    _fails(check, "ValueError", e,
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(5, 1, 1)) should raise ValueError, "
           "raised None")


def test_bad_sizes_probe_fails_with_its_message():
    """Regression: the probes' expected value is the references' list of outcomes, which has no 'shape' key; the
    check once read expected['shape'], so a failing student got a TypeError instead of this hint."""
    from metalib.grading.judge import expected_value
    probe = {p.name: p for p in sv.make_probes(random.Random(0))}["test_episode_rejects_bad_sizes"]
    _fails(probe.check, ["ValueError", "nothing"], expected_value(probe, sv.references()),
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(2, 15, 6)) should raise ValueError, returned")


def test_objective():
    v, g = torch.tensor(1.5), torch.tensor(-2.0)
    e = {"value": v, "grad": g}
    sv._objective({"value": v + 1e-6, "grad": g}, e)
    _fails(sv._objective, [v, g], e, "the meta-objective did not come back")
    _fails(sv._objective, {"value": None, "grad": None}, e, f"meta_objective is None: {common.NOTHING}")
    _fails(sv._objective, {"grad": g}, e, f"meta_objective is None: {common.NOTHING}")
    _fails(sv._objective, {"value": "float", "grad": None}, e,
           "meta_objective should return a tensor (differentiable in theta), got float")
    with pytest.raises(AssertionError, match="^meta_objective differs"):
        sv._objective({"value": v + 1e-3, "grad": g}, e)
    _fails(sv._objective, {"value": v, "grad": None}, e,
           "meta_objective's value does not depend on theta through autograd: keep the computation differentiable "
           "(no .item(), .detach() or float())")
    _fails(sv._objective, {"value": v}, e,
           "meta_objective's value does not depend on theta through autograd: keep the computation differentiable "
           "(no .item(), .detach() or float())")
    with pytest.raises(AssertionError, match=r"^d meta_objective / d theta differs"):
        sv._objective({"value": v, "grad": g + 1e-3}, e)


def test_objective_checks_what_adapt_saw():
    s = [[torch.ones(2, 1), torch.zeros(2)], [torch.full((2, 1), 2.0), torch.ones(2)]]
    v, g = torch.tensor(1.5), torch.tensor(-2.0)
    e = {"value": v, "grad": g, "seen": s}
    sv._objective({"value": v, "grad": g, "seen": [[t.clone() for t in p] for p in s]}, e)
    sv._objective({"value": v, "grad": g, "seen": "anything"}, {"value": v, "grad": g})
    _fails(sv._objective, {"value": v, "grad": g}, e, "adapt should be called once per task (2), was called ? times")
    _fails(sv._objective, {"value": v, "grad": g, "seen": s[:1]}, e,
           "adapt should be called once per task (2), was called 1 times")
    _fails(sv._objective, {"value": v, "grad": g, "seen": s + s}, e,
           "adapt should be called once per task (2), was called 4 times")
    for bad in (s[1], [s[0][0]], s[0] + [s[0][1]], tuple(s[0]), [s[0][0], s[0][1].tolist()],
                [s[0][0], s[0][1][None]], [s[0][0], s[0][1] + 1], [torch.nn.Parameter(s[0][0]), s[0][1]]):
        _fails(sv._objective, {"value": v, "grad": g, "seen": [bad, s[1]]}, e,
               "adapt must receive task 0's support set (D^tr)")
    _fails(sv._objective, {"value": v, "grad": g, "seen": [s[0], s[0]]}, e,
           "adapt must receive task 1's support set (D^tr)")
    _fails(sv._objective, {"value": None, "grad": g, "seen": []}, e, f"meta_objective is None: {common.NOTHING}")
    _fails(sv._objective, {"value": "int", "grad": g, "seen": []}, e,
           "meta_objective should return a tensor (differentiable in theta), got int")


# ---------------------------------------------------------------------------------------------- probes


def test_probes_draw_their_inputs_as_documented():
    rng = _Recording(11)
    probes = sv.make_probes(rng)
    calls = rng.calls
    ranges = [c[1:-1] for c in calls]
    c, h, k2 = (x[-1] for x in calls[:3])
    b = calls[14][-1]
    want = [(25, 35), (8, 16), (1, 4), (c - 10, c), (1, 5), (1, 5), (2, 5), (1, 19), (5, 8), (8, 12), (4, 12),
            (1, 5), (1, 19), (1, 3), (2, 6), (10**6,), (2, 6), (3, 8)] + [(-3, 3)] * b + \
        [(0.05, 0.4), (-1, 1), (-2, 2)] + [(-5, 3)] * 3 + [(0.5, 4)] * 3 + [(0.05, 0.5), (0.5, 2), (2, 10)] + \
        [(10**6,)] * 7 + [(3, 7), (2, 5), (4, 9), (1, 3)]
    assert ranges == want
    v = [x[-1] for x in calls]
    sizes = [(v[3], v[4], v[5]), (v[6], k2, 20 - k2), (2, 1, v[7])]
    classes, m, cm = v[8], v[9], v[10]
    bad = [(c + v[11], 1, 1), (2, v[12], 20 - v[12] + v[13])]
    i = 18 + b
    w = [round(x, 3) for x in v[18:i]]
    linear = sv._linear(v[15], b, v[16], v[17], w, round(v[i], 3), round(v[i + 1], 3), round(v[i + 2], 3))
    lows = [round(x, 3) for x in v[i + 3:i + 6]]
    rs = [(lo, round(lo + x, 3)) for lo, x in zip(lows, v[i + 6:i + 9])]
    ms = [(round(v[i + 9], 4),), (round(v[i + 10], 4),), (round(v[i + 11], 4),)]
    seeds = v[i + 12:i + 19]
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q1", "test_episode_is_valid", False), ("q1", "test_episode_uses_the_generator", False),
        ("q1", "test_episode_rejects_bad_sizes", False), ("q1", "test_episode_other_sizes", True),
        ("q1", "test_episode_classes_are_uniform", True), ("q1", "test_episode_drawings_are_random", True),
        ("q1", "test_episode_rejects_other_bad_sizes", True), ("q2", "test_meta_objective_value_and_gradient", False),
        ("q2", "test_meta_objective_adapts_on_support_only", True), ("q2", "test_meta_objective_other_tasks", True),
        ("q3", "test_pooled_slope_is_a_number", False), ("q3", "test_pooled_slope_is_the_mean_slope", True),
        ("q4", "test_newton_step_is_a_number", False), ("q4", "test_newton_step_other_m", True)]
    code = [p.code for p in probes]
    head = sv.HEAD
    assert code[0] == head + "images = torch.randint(0, 256, (12, 20, 28, 28), dtype=torch.uint8, generator=G(1))\n" + \
        "result = {'images': images, 'tasks': [_ep(sample_episode(images, 5, 1, 3, G(0)))]}\n"
    assert code[1] == head + "images = torch.randint(0, 256, (12, 20, 28, 28), dtype=torch.uint8, generator=G(1))\n" + (
        "a, b, c = (_ep(sample_episode(images, 3, 2, 2, G(s))) for s in (5, 5, 6))\n"
        "ids = (torch.arange(12)[:, None] * 12 + torch.arange(12)).to(torch.uint8)\n"
        "coded = ids[:, :, None, None].expand(12, 12, 4, 4).contiguous()\n"
        "gen = G(0)\n"
        "result = {'a': a, 'b': b, 'c': c, 'coded': [_ep(sample_episode(coded, 2, 1, 2, gen)) for _ in range(40)]}\n")
    assert code[2] == head + ("images = torch.zeros(4, 20, 28, 28, dtype=torch.uint8)\n"
                              "result = [_raises(sample_episode, images, *a, G(0)) for a in ((5, 1, 1), (2, 15, 6))]\n")
    assert code[3] == head + f"images = torch.randint(0, 256, ({c}, 20, {h}, {h}), dtype=torch.uint8, generator=G({seeds[0]}))\n" + (
        f"result = {{'images': images, 'tasks': [_ep(sample_episode(images, n, k, q, G(s))) for (n, k, q), s in "
        f"zip({sizes}, {seeds[1:4]})]}}\n")
    assert code[4] == head + (f"images = (torch.arange({classes}, dtype=torch.uint8) * 30).view({classes}, 1, 1, 1)"
                              f".expand({classes}, 20, 4, 4).contiguous()\n"
                              f"gen = G({seeds[4]})\n"
                              "tasks = [_ep(sample_episode(images, 2, 1, 1, gen)) for _ in range(600)]\n"
                              "result = [t[0] if isinstance(t, list) and t else t for t in tasks]\n")
    assert code[5] == head + (f"ids = (torch.arange({cm})[:, None] * {m} + torch.arange({m})).to(torch.uint8)\n"
                              f"coded = ids[:, :, None, None].expand({cm}, {m}, 4, 4).contiguous()\n"
                              f"gen = G({seeds[5]})\n"
                              "result = [_ep(sample_episode(coded, 2, 1, 2, gen)) for _ in range(40)]\n")
    assert code[6] == head + (f"images = torch.zeros({c}, 20, 8, 8, dtype=torch.uint8)\n"
                              f"result = [_raises(sample_episode, images, *a, G(0)) for a in {bad}]\n")
    assert code[7] == sv._linear(0, 3, 4, 6, [1.0, -2.0, 3.0], 0.3, 0.5, 1.0)
    assert code[8] == sv._support_only(seeds[6], *v[-4:])
    assert code[9] == linear
    assert code[10:] == [common.number_probe("pooled_slope", [(0.0, 4.0)]), common.number_probe("pooled_slope", rs),
                         common.number_probe("newton_step", [(2.0,)]), common.number_probe("newton_step", ms)]


def test_probe_checks():
    probes = {p.name: p for p in sv.make_probes(random.Random(3))}
    # q1 public: a 5-way 1-shot 3-query episode
    images = _coded(6, 5)
    ep = _ep(images, [0, 1, 2, 3, 4], [[0]] * 5, [[1, 2, 3]] * 5)
    probes["test_episode_is_valid"].check({"tasks": [ep]}, {"images": images})
    with pytest.raises(AssertionError, match=r"^sample_episode\(images \(6, 5, 4, 4\), n_way=5, k_shot=1, n_query=3\)"):
        probes["test_episode_is_valid"].check({"tasks": [None]}, {"images": images})
    assert probes["test_episode_uses_the_generator"].check is sv._generator
    assert probes["test_meta_objective_value_and_gradient"].check is sv._objective
    assert probes["test_meta_objective_other_tasks"].check is sv._objective
    assert probes["test_meta_objective_adapts_on_support_only"].check is sv._objective


def test_hidden_episode_checks_use_the_drawn_sizes():
    rng = _Recording(5)
    probes = {p.name: p for p in sv.make_probes(rng)}
    v = [x[-1] for x in rng.calls]
    c, k2 = v[0], v[2]
    sizes = [(v[3], v[4], v[5]), (v[6], k2, 20 - k2), (2, 1, v[7])]
    images = torch.zeros(c, 20, 4, 4, dtype=torch.uint8)
    n, k, q = sizes[0]
    with pytest.raises(AssertionError, match=fr"^sample_episode\(images \({c}, 20, 4, 4\), n_way={n}, "
                                             fr"k_shot={k}, n_query={q}\): the episode is None"):
        probes["test_episode_other_sizes"].check({"tasks": [None] * 3}, {"images": images})
    _fails(probes["test_episode_other_sizes"].check, {"tasks": [None] * 4}, {"images": images},
           "sample_episode's episodes did not come back")
    classes, m, cm = v[8], v[9], v[10]
    got = _uniform_got([0] * 600 + [1] * 600)
    with pytest.raises(AssertionError) as err:
        probes["test_episode_classes_are_uniform"].check(got, None)
    assert str(err.value).endswith(f"got counts {[600, 600] + [0] * (classes - 2)}")
    assert f"({1200 / classes:.0f} times each over 600 2-way episodes)" in str(err.value)
    with pytest.raises(AssertionError) as err:
        probes["test_episode_drawings_are_random"].check(_all_drawings(cm, m)[:1], None)
    assert str(err.value).startswith(f"drawings should be picked at random among all {m} of a class; over 1 episodes")
    probes["test_episode_drawings_are_random"].check(_all_drawings(cm, m), None)
    bad = [(c + v[11], 1, 1), (2, v[12], 20 - v[12] + v[13])]
    _fails(probes["test_episode_rejects_other_bad_sizes"].check, ["ValueError", "nothing"], {"shape": (c, 20, 8, 8)},
           f"sample_episode(images ({c}, 20, 8, 8), n_way, k_shot, n_query={bad[1]}) should raise ValueError, returned")
    probes["test_episode_rejects_other_bad_sizes"].check(["ValueError", "ValueError"], None)


def test_number_probes_tolerances_and_hints():
    rng = _Recording(2)
    probes = {p.name: p for p in sv.make_probes(rng)}
    pub = probes["test_pooled_slope_is_a_number"].check
    pub([2.0 + 0.99e-3], [2.0])
    _fails(pub, [2.0 + 1.01e-3], [2.0], "pooled_slope(0, 4) = 2.00101: for slopes w ~ U[0, 4] the best shared "
                                         "slope is 2 (the problem is symmetric about w = 2)")
    hid = probes["test_pooled_slope_is_the_mean_slope"].check
    lows = [round(c[-1], 3) for c in rng.calls if c[1:3] == (-5, 3)]
    his = [round(lo + c[-1], 3) for lo, c in zip(lows, [c for c in rng.calls if c[1:3] == (0.5, 4)])]
    e = [(lo + hi) / 2 for lo, hi in zip(lows, his)]
    hid([x + 0.99e-3 for x in e], e)
    with pytest.raises(AssertionError) as err:
        hid([e[0], e[1] + 1.01e-3, e[2]], e)
    assert str(err.value) == (f"pooled_slope({lows[1]:.4g}, {his[1]:.4g}) = {e[1] + 1.01e-3:.6g}: not quite. The loss "
                              "factorises as E[x^2] E[(theta - w)^2] plus a noise term; which theta minimises "
                              "E[(theta - w)^2]?")
    newton = probes["test_newton_step_is_a_number"].check
    newton([0.25 + 0.99e-6], [0.25])
    _fails(newton, [0.25 - 1.01e-6], [0.25],
           "newton_step(2) = 0.249999: with m = 2 one step lands on w when 1 - 2 alpha m = 0")
    other = probes["test_newton_step_other_m"].check
    ms = [round(c[-1], 4) for c in rng.calls if c[1:3] in ((0.05, 0.5), (0.5, 2), (2, 10))]
    other([5.0 + 4.9e-6, 0.5, 0.1 + 0.99e-6], [5.0, 0.5, 0.1])     # the tolerance is 1e-6 max(1, expected)
    with pytest.raises(AssertionError) as err:
        other([5.0 + 5.1e-6, 0.5, 0.1], [5.0, 0.5, 0.1])
    assert str(err.value) == (f"newton_step({ms[0]:.4g}) = 5.00001: the error after one step is "
                              "(1 - 2 alpha m)(theta - w); solve 1 - 2 alpha m = 0")
    with pytest.raises(AssertionError, match=r"^newton_step\("):
        other([5.0, 0.5, 0.1 + 1.5e-6], [5.0, 0.5, 0.1])


# ---------------------------------------------------------------------------------------------- references


def test_reference_sample_episode():
    ref = sv.references()["sample_episode"]
    images = torch.randint(0, 256, (6, 7, 3, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(9)
    got = ref(images, 3, 2, 4, torch.Generator().manual_seed(9))
    classes = torch.randperm(6, generator=g)[:3]
    draws = [torch.randperm(7, generator=g)[:6] for _ in range(3)]
    xs = torch.stack([images[classes[i], draws[i][j]] for i in range(3) for j in range(2)]).float() / 255
    xq = torch.stack([images[classes[i], draws[i][j]] for i in range(3) for j in range(2, 6)]).float() / 255
    assert torch.equal(got.x_support, xs[:, None]) and torch.equal(got.x_query, xq[:, None])
    assert got.y_support.tolist() == [0, 0, 1, 1, 2, 2] and got.y_query.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    ref(images, 6, 3, 4, torch.Generator())                  # the largest episode that fits
    for args in ((7, 1, 1), (2, 4, 4), (2, 7, 1)):
        with pytest.raises(ValueError, match="^episode too large for these images$"):
            ref(images, *args, torch.Generator())


def test_reference_meta_objective_and_numbers():
    from metalib import Task
    refs = sv.references()
    tasks = Task(torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]]), torch.tensor([[5.0], [6.0]]),
                 torch.tensor([[7.0], [9.0]]))
    got = refs["meta_objective"](10.0, tasks, lambda th, x, y: th + x.sum() * y.sum(), lambda p, x, y: (p * x - y).sum())
    assert got == ((10 + 3) * 5 - 7) + ((10 + 8) * 6 - 9)
    assert refs["pooled_slope"](1.0, 4.0) == 2.5 and refs["newton_step"](4.0) == 0.125
    assert set(refs) == {"sample_episode", "meta_objective", "pooled_slope", "newton_step"}
    assert sv.JUDGE.assignment == "01_supervised_meta_learning" and sv.JUDGE.make_probes is sv.make_probes
    assert sv.JUDGE.references is sv.references


def test_drawings_used_once_are_enough():
    images = _coded(3, 6)
    sv._drawings([_ep(images, [0, 1], [[0], [3]], [[1, 2], [4, 5]])], 3, 6)     # every drawing used exactly once


def test_generator_checks_the_coded_episodes_against_12_classes():
    images = _coded(4, 5)
    a = _ep(images, [0, 1], [[0], [1]], [[2, 3], [0, 4]])
    c = _ep(images, [2, 1], [[0], [1]], [[2, 3], [0, 4]])
    outside = _ep(_coded(13, 12), [12, 0], [[0], [1]], [[1, 2], [0, 2]])      # class 12 is not among the 12 classes
    _fails(sv._generator, {"a": a, "b": a, "c": c, "coded": _all_drawings() + [outside]}, None,
           "x_support[0] is not one of the split's images scaled to [0, 1] (divide the uint8 images by 255)")


def test_uniform_reads_the_first_pixel_and_clamps_both_ends():
    e = {"classes": 5, "step": 30}
    xs = torch.zeros(2, 1, 4, 4)
    xs[0, 0, 0, 0], xs[1, 0, 0, 0] = 4 * 30 / 255, 3 * 30 / 255      # the class is read from pixel (0, 0) only
    _fails(sv._uniform, [xs], e, "every class should be picked about equally often (0 times each over 1 2-way "
                                 "episodes), got counts [0, 0, 0, 1, 1]")
    neg = torch.full((2, 1, 4, 4), -0.5)                             # below the first class: counted as class 0
    _fails(sv._uniform, [neg], e, "every class should be picked about equally often (0 times each over 1 2-way "
                                  "episodes), got counts [2, 0, 0, 0, 0]")
    full = (torch.tensor([200.0, 201.0]) / 255).view(2, 1, 1, 1).expand(2, 1, 4, 4)   # step 1: 256 classes
    want = [0] * 256
    want[200] = want[201] = 1
    _fails(sv._uniform, [full], {"classes": 256, "step": 1},
           f"every class should be picked about equally often (0 times each over 1 2-way episodes), got counts {want}")


def test_public_bad_sizes_probe_names_its_cases():
    probe = {p.name: p for p in sv.make_probes(random.Random(0))}["test_episode_rejects_bad_sizes"]
    e = {"shape": (4, 20, 28, 28)}
    probe.check(["ValueError", "ValueError"], e)
    _fails(probe.check, ["nothing", "ValueError"], e,
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(5, 1, 1)) should raise ValueError, returned")
    _fails(probe.check, ["ValueError", "KeyError"], e,
           "sample_episode(images (4, 20, 28, 28), n_way, k_shot, n_query=(2, 15, 6)) should raise ValueError, "
           "raised KeyError")
