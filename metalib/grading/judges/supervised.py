"""Judge of notebook 01 (supervised meta-learning: episodes, the meta-objective, two small derivations),
checked outside the student's process.

The public probes use the public tests' inputs; the hidden ones draw theirs (image sets, N/K/Q,
generator seeds, tasks, slopes) when grading starts. An episode has many right answers, so the judge
checks the sampled episodes themselves (`metalib.checks.assert_episode` against the grader's own copy
of the images), their reproducibility, and that classes and drawings are picked at random; the
meta-objective's value and gradient (taken in the sandbox) are compared with a per-task loop.
"""
from __future__ import annotations

import random

from ..judge import Judge, Probe
from .common import HELPERS, nothing, numbers, number_probe, tensors

HEAD = HELPERS + '''import torch
from metalib import Task

def _ep(t):
    if t is None:
        return None
    try:
        return [v for v in t]
    except TypeError:
        return type(t).__name__

def _vg(value, theta):
    if not isinstance(value, torch.Tensor):
        return {"value": None if value is None else type(value).__name__, "grad": None}
    grad = torch.autograd.grad(value, theta, allow_unused=True)[0] if value.requires_grad else None
    return {"value": value.detach(), "grad": grad}

G = lambda seed: torch.Generator().manual_seed(seed)
'''


def _images(c: int, m: int, h: int, seed: int) -> str:
    return f"images = torch.randint(0, 256, ({c}, {m}, {h}, {h}), dtype=torch.uint8, generator=G({seed}))\n"


def _parts(ep, name: str) -> list:
    import torch

    if ep is None:
        raise AssertionError(f"{name} is None: the function returned nothing. Did you finish the exercise "
                             "(replace `...`) and `return` a Task?")
    if not isinstance(ep, list) or len(ep) != 4 or not all(type(t) is torch.Tensor for t in ep):
        raise AssertionError(f"{name}: expected Task(x_support, y_support, x_query, y_query) of tensors")
    return ep


def _valid(sizes: list[tuple[int, int, int]]):
    """Each returned episode is a valid N-way K-shot episode of the grader's images."""
    from ... import checks

    def check(got, expected):
        if not isinstance(got, dict) or not isinstance(got.get("tasks"), list) or len(got["tasks"]) != len(sizes):
            raise AssertionError("sample_episode's episodes did not come back")
        for ep, (n, k, q) in zip(got["tasks"], sizes):
            try:
                checks.assert_episode(_parts(ep, "the episode"), expected["images"], n_way=n, k_shot=k, n_query=q)
            except AssertionError as err:
                raise AssertionError(f"sample_episode(images {tuple(expected['images'].shape)}, n_way={n}, "
                                     f"k_shot={k}, n_query={q}): {err}") from None
    return check


def _generator(got, expected) -> None:
    """Same seed, same episode; another seed, another; every drawing of a class gets used."""
    import torch

    a, b, c = (_parts(got.get(k) if isinstance(got, dict) else None, f"episode {k}") for k in "abc")
    if not all(torch.equal(u, v) for u, v in zip(a, b)):
        raise AssertionError("the same seed must give the same episode: draw every random number from `generator`")
    if a[0].shape == c[0].shape and torch.equal(a[0], c[0]):
        raise AssertionError("different seeds should give different episodes")
    _drawings(got.get("coded"), 12, 12)


def _coded(c: int, m: int):
    """c classes of m drawings; drawing j of class i is filled with the value m i + j."""
    import torch

    ids = (torch.arange(c)[:, None] * m + torch.arange(m)).to(torch.uint8)
    return ids[:, :, None, None].expand(c, m, 4, 4).contiguous()


def _drawings(episodes, c: int, m: int) -> None:
    """Valid 2-way 1-shot 2-query episodes of `_coded` images, which together use every drawing index."""
    import torch

    from ... import checks

    used, images = torch.zeros(m), _coded(c, m)
    for ep in episodes if isinstance(episodes, list) else [None]:
        xs, _, xq, _ = _parts(ep, "an episode of the coded images")
        checks.assert_episode(ep, images, n_way=2, k_shot=1, n_query=2)
        drawn = (torch.cat([xs, xq]).double()[:, 0, 0, 0] * 255).round().long() % m
        used += torch.bincount(drawn.clamp(0, m - 1), minlength=m)[:m]
    if not (used > 0).all():
        raise AssertionError(f"drawings should be picked at random among all {m} of a class; over "
                             f"{len(episodes)} episodes drawings {torch.nonzero(used == 0).flatten().tolist()} "
                             "were never used")


def _uniform(got, expected) -> None:
    import torch

    c, step = expected["classes"], expected["step"]
    if not isinstance(got, list) or not got:
        raise AssertionError("sample_episode's episodes did not come back")
    counts = torch.zeros(c)
    for xs in got:
        if type(xs) is not torch.Tensor or xs.dim() != 4 or xs.shape[0] != 2:
            raise AssertionError("x_support of a 2-way 1-shot episode should have shape (2, 1, H, W)")
        counts += torch.bincount((xs.double()[:, 0, 0, 0] * 255 / step).round().long().clamp(0, c - 1), minlength=c)
    low = 0.6 * 2 * len(got) / c
    if counts.min() <= low:
        raise AssertionError(f"every class should be picked about equally often ({2 * len(got) / c:.0f} times each "
                             f"over {len(got)} 2-way episodes), got counts {counts.long().tolist()}")


def _bad_sizes(cases: list, shape: tuple):
    """``shape``: the images' shape in the probe (its expected value is the references' outcomes, a list)."""
    def check(got, expected):
        for args, outcome in zip(cases, got if isinstance(got, list) else [None] * len(cases)):
            if outcome != "ValueError":
                raise AssertionError(f"sample_episode(images {shape}, n_way, k_shot, n_query={args}) "
                                     f"should raise ValueError, {'returned' if outcome == 'nothing' else 'raised'} "
                                     f"{'' if outcome == 'nothing' else outcome}".rstrip())
    return check


def _objective(got, expected) -> None:
    if not isinstance(got, dict):
        raise AssertionError("the meta-objective did not come back")
    nothing(got.get("value"), "meta_objective")
    if isinstance(got.get("value"), str):
        raise AssertionError(f"meta_objective should return a tensor (differentiable in theta), got {got['value']}")
    if "seen" in expected:
        seen = got.get("seen")
        n = len(expected["seen"])
        if not isinstance(seen, list) or len(seen) != n:
            raise AssertionError(f"adapt should be called once per task ({n}), was called "
                                 f"{len(seen) if isinstance(seen, list) else '?'} times")
        import torch
        for i, (s, e) in enumerate(zip(seen, expected["seen"])):
            if not (isinstance(s, list) and len(s) == 2 and all(type(t) is torch.Tensor and t.shape == u.shape
                                                                  and torch.equal(t, u) for t, u in zip(s, e))):
                raise AssertionError(f"adapt must receive task {i}'s support set (D^tr)")
    tensors("meta_objective")(got["value"], expected["value"])
    if got.get("grad") is None:
        raise AssertionError("meta_objective's value does not depend on theta through autograd: keep the "
                             "computation differentiable (no .item(), .detach() or float())")
    tensors("d meta_objective / d theta")(got["grad"], expected["grad"])


def _linear(seed: int, b: int, s: int, q: int, w: list[float], alpha: float, theta: float, shift: float) -> str:
    return HEAD + (f"g = G({seed})\n"
                   f"xs, xq = torch.randn({b}, {s}, 1, generator=g), torch.randn({b}, {q}, 1, generator=g)\n"
                   f"w = torch.tensor({w}).view({b}, 1, 1)\n"
                   f"tasks = Task(xs, xs * w, xq, xq * w + {shift})\n"
                   f"adapt = lambda th, x, y: th - {alpha} * 2 * (x * (x * th - y)).mean()\n"
                   "loss = lambda phi, x, y: ((x * phi - y) ** 2).mean()\n"
                   f"theta = torch.tensor({theta}, requires_grad=True)\n"
                   "result = _vg(meta_objective(theta, tasks, adapt, loss), theta)\n")


def _support_only(seed: int, b: int, s: int, q: int, d: int) -> str:
    return HEAD + (f"g = G({seed})\n"
                   f"tasks = Task(torch.randn({b}, {s}, {d}, generator=g), torch.randn({b}, {s}, generator=g),\n"
                   f"             torch.randn({b}, {q}, {d}, generator=g), torch.randn({b}, {q}, generator=g))\n"
                   "seen = []\n"
                   "def adapt(theta, x, y):\n"
                   "    seen.append([x.clone(), y.clone()])\n"
                   "    return theta + y.mean()\n"
                   "loss = lambda phi, x, y: ((x.sum(-1) + phi - y) ** 2).mean()\n"
                   "theta = torch.tensor(-0.2, requires_grad=True)\n"
                   "result = {**_vg(meta_objective(theta, tasks, adapt, loss), theta), 'seen': seen}\n")


def make_probes(rng: random.Random) -> list[Probe]:
    # q1: hidden image sets and sizes
    c, h = rng.randint(25, 35), rng.randint(8, 16)
    k2 = rng.randint(1, 4)
    sizes = [(rng.randint(c - 10, c), rng.randint(1, 5), rng.randint(1, 5)), (rng.randint(2, 5), k2, 20 - k2),
             (2, 1, rng.randint(1, 19))]
    classes, step = rng.randint(5, 8), 30
    m, cm = rng.randint(8, 12), rng.randint(4, 12)
    bad = [(c + rng.randint(1, 5), 1, 1), (2, (kb := rng.randint(1, 19)), 20 - kb + rng.randint(1, 3))]
    # q2: hidden tasks
    b = rng.randint(2, 6)
    linear = _linear(rng.randrange(10**6), b, rng.randint(2, 6), rng.randint(3, 8),
                     [round(rng.uniform(-3, 3), 3) for _ in range(b)], round(rng.uniform(0.05, 0.4), 3),
                     round(rng.uniform(-1, 1), 3), round(rng.uniform(-2, 2), 3))
    # q3, q4: hidden numbers
    lows = [round(rng.uniform(-5, 3), 3) for _ in range(3)]
    ranges = [(lo, round(lo + rng.uniform(0.5, 4), 3)) for lo in lows]
    ms = [(round(rng.uniform(0.05, 0.5), 4),), (round(rng.uniform(0.5, 2), 4),), (round(rng.uniform(2, 10), 4),)]
    slope_hint = lambda a, g, e: ("not quite. The loss factorises as E[x^2] E[(theta - w)^2] plus a noise term; "
                                  "which theta minimises E[(theta - w)^2]?")
    newton_hint = lambda a, g, e: "the error after one step is (1 - 2 alpha m)(theta - w); solve 1 - 2 alpha m = 0"
    return [
        Probe("q1", "test_episode_is_valid", False,
              HEAD + _images(12, 20, 28, 1) + "result = {'images': images, 'tasks': [_ep(sample_episode(images, 5, 1, 3, G(0)))]}\n",
              check=_valid([(5, 1, 3)])),
        Probe("q1", "test_episode_uses_the_generator", False, HEAD + _images(12, 20, 28, 1) + (
            "a, b, c = (_ep(sample_episode(images, 3, 2, 2, G(s))) for s in (5, 5, 6))\n"
            "ids = (torch.arange(12)[:, None] * 12 + torch.arange(12)).to(torch.uint8)\n"
            "coded = ids[:, :, None, None].expand(12, 12, 4, 4).contiguous()\n"
            "gen = G(0)\n"
            "result = {'a': a, 'b': b, 'c': c, 'coded': [_ep(sample_episode(coded, 2, 1, 2, gen)) for _ in range(40)]}\n"),
              check=_generator),
        Probe("q1", "test_episode_rejects_bad_sizes", False, HEAD + (
            "images = torch.zeros(4, 20, 28, 28, dtype=torch.uint8)\n"
            "result = [_raises(sample_episode, images, *a, G(0)) for a in ((5, 1, 1), (2, 15, 6))]\n"),
              check=_bad_sizes([(5, 1, 1), (2, 15, 6)], (4, 20, 28, 28))),
        Probe("q1", "test_episode_other_sizes", True, HEAD + _images(c, 20, h, rng.randrange(10**6)) + (
            f"result = {{'images': images, 'tasks': [_ep(sample_episode(images, n, k, q, G(s))) for (n, k, q), s in "
            f"zip({sizes}, {[rng.randrange(10**6) for _ in sizes]})]}}\n"), check=_valid(sizes)),
        Probe("q1", "test_episode_classes_are_uniform", True, HEAD + (
            f"images = (torch.arange({classes}, dtype=torch.uint8) * {step}).view({classes}, 1, 1, 1)"
            f".expand({classes}, 20, 4, 4).contiguous()\n"
            f"gen = G({rng.randrange(10**6)})\n"
            "tasks = [_ep(sample_episode(images, 2, 1, 1, gen)) for _ in range(600)]\n"
            "result = [t[0] if isinstance(t, list) and t else t for t in tasks]\n"),
              check=lambda got, expected: _uniform(got, {"classes": classes, "step": step})),
        Probe("q1", "test_episode_drawings_are_random", True, HEAD + (
            f"ids = (torch.arange({cm})[:, None] * {m} + torch.arange({m})).to(torch.uint8)\n"
            f"coded = ids[:, :, None, None].expand({cm}, {m}, 4, 4).contiguous()\n"
            f"gen = G({rng.randrange(10**6)})\n"
            "result = [_ep(sample_episode(coded, 2, 1, 2, gen)) for _ in range(40)]\n"),
              check=lambda got, expected: _drawings(got, cm, m)),
        Probe("q1", "test_episode_rejects_other_bad_sizes", True, HEAD + (
            f"images = torch.zeros({c}, 20, 8, 8, dtype=torch.uint8)\n"
            f"result = [_raises(sample_episode, images, *a, G(0)) for a in {bad}]\n"),
              check=_bad_sizes(bad, (c, 20, 8, 8))),
        # q2: the meta-objective, its value and its gradient
        Probe("q2", "test_meta_objective_value_and_gradient", False,
              _linear(0, 3, 4, 6, [1.0, -2.0, 3.0], 0.3, 0.5, 1.0), check=_objective),
        Probe("q2", "test_meta_objective_adapts_on_support_only", True,
              _support_only(rng.randrange(10**6), rng.randint(3, 7), rng.randint(2, 5), rng.randint(4, 9),
                            rng.randint(1, 3)), check=_objective),
        Probe("q2", "test_meta_objective_other_tasks", True, linear, check=_objective),
        # q3, q4: two derivations, answered as formulas
        Probe("q3", "test_pooled_slope_is_a_number", False, number_probe("pooled_slope", [(0.0, 4.0)]),
              check=numbers("pooled_slope", [(0.0, 4.0)], lambda e: 1e-3,
                            lambda a, g, e: "for slopes w ~ U[0, 4] the best shared slope is 2 (the problem is "
                                            "symmetric about w = 2)")),
        Probe("q3", "test_pooled_slope_is_the_mean_slope", True, number_probe("pooled_slope", ranges),
              check=numbers("pooled_slope", ranges, lambda e: 1e-3, slope_hint)),
        Probe("q4", "test_newton_step_is_a_number", False, number_probe("newton_step", [(2.0,)]),
              check=numbers("newton_step", [(2.0,)], lambda e: 1e-6,
                            lambda a, g, e: "with m = 2 one step lands on w when 1 - 2 alpha m = 0")),
        Probe("q4", "test_newton_step_other_m", True, number_probe("newton_step", ms),
              check=numbers("newton_step", ms, lambda e: 1e-6 * max(1.0, e), newton_hint)),
    ]


def references() -> dict:
    import torch

    from ...tasks import Task

    def sample_episode(images, n_way, k_shot, n_query, generator):  # the plain construction of the notebook
        n_classes, per_class = images.shape[:2]
        if n_way > n_classes or k_shot + n_query > per_class:
            raise ValueError("episode too large for these images")
        classes = torch.randperm(n_classes, generator=generator)[:n_way]
        draws = torch.stack([torch.randperm(per_class, generator=generator)[:k_shot + n_query] for _ in range(n_way)])
        x = images[classes[:, None], draws].float().div(255).unsqueeze(2)
        labels = torch.arange(n_way)
        return Task(x[:, :k_shot].reshape(n_way * k_shot, *x.shape[2:]), labels.repeat_interleave(k_shot),
                    x[:, k_shot:].reshape(n_way * n_query, *x.shape[2:]), labels.repeat_interleave(n_query))

    def meta_objective(theta, tasks, adapt, loss):  # sum over tasks of the query loss after adapting on D^tr
        return sum(loss(adapt(theta, tasks.x_support[i], tasks.y_support[i]), tasks.x_query[i], tasks.y_query[i])
                   for i in range(tasks.x_support.shape[0]))

    return {"sample_episode": sample_episode, "meta_objective": meta_objective,
            "pooled_slope": lambda low, high: (low + high) / 2, "newton_step": lambda m: 1 / (2 * m)}


JUDGE = Judge("01_supervised_meta_learning", make_probes, references)
