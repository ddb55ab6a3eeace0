"""Judge of notebook 09 (choosing a meta-learner), checked outside the student's process.

Public probes use the public tests' inputs; hidden ones draw their embeddings, class counts, ways,
seeds and orders when grading starts. ``proto_head``'s expected values come from
`metalib.protomaml.proto_head` in the grader's process (guarded, not hidden: the notebook's
ProtoMAML uses it, so it raises only while the probes run, like ``maml.sgd_step``). ``shuffle_labels`` is random: its outputs come back as tensors and the judge
checks, outside, that they are one consistent permutation per task, reproducible from the
generator and different between tasks. ``metasgd_step`` (q1b) against `metalib.maml.sgd_step`; whether
it changed its inputs and how its result depends on the rates and gradients are measured in the
sandbox and judged here. Questions the judge does not know run their Otter tests.
"""
from __future__ import annotations

import random

from ..judge import Judge, Probe, compare
from .common import PLAIN, choice_probe, is_choice, right_choice

ROWS = {"finetune", "blackbox", "matching", "protonet", "maml", "anil", "protomaml"}

HAND = PLAIN + """# class 0: (0, 0), (2, 0) -> c_0 = (1, 0); class 1: (0, 2), (0, 4) -> c_1 = (0, 3)
z = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]]])
W, b = proto_head(z, torch.tensor([[0, 0, 1, 1]]), 2)
result = {"W = 2 c": plain(W), "b = -|c|^2": plain(b)}
"""


def _softmax(seed: int, B: int, N: int, K: int, M: int, D: int) -> str:
    """The linear head's log-softmax on queries (the ProtoNet's, whatever constant the head adds)."""
    return PLAIN + f"""g = torch.Generator().manual_seed({seed})
zs, zq = torch.randn({B}, {N * K}, {D}, generator=g), torch.randn({B}, {M}, {D}, generator=g)
ys = torch.stack([torch.arange({N}).repeat({K})[torch.randperm({N * K}, generator=g)] for _ in range({B})])
W, b = proto_head(zs, ys, {N})
result = plain((zq @ W.transpose(1, 2) + b[:, None, :]).log_softmax(-1))
"""


def _float64(seed: int, B: int, S: int, N: int, D: int) -> str:
    """Unequal class counts, float64."""
    return PLAIN + f"""g = torch.Generator().manual_seed({seed})
z = torch.randn({B}, {S}, {D}, generator=g, dtype=torch.float64)
y = torch.cat([torch.arange({N}).expand({B}, {N}), torch.randint(0, {N}, ({B}, {S - N}), generator=g)], 1)
y = y[:, torch.randperm({S}, generator=g)]
W, b = proto_head(z, y, {N})
result = {{"W": plain(W), "b": plain(b)}}
"""


def _keeps_float64(got, expected) -> None:
    import torch

    if isinstance(got, dict) and all(type(got.get(k)) is torch.Tensor for k in ("W", "b")) \
            and (got["W"].dtype, got["b"].dtype) != (torch.float64, torch.float64):
        raise AssertionError(f"keep the dtype of z_support (float64), got {got['W'].dtype} and {got['b'].dtype}")
    compare(got, expected, name="head (float64, unequal class counts)", atol=1e-12, rtol=1e-10)


def _gradient(seed: int, B: int, S: int, N: int, D: int) -> str:
    return PLAIN + f"""g = torch.Generator().manual_seed({seed})
z = torch.randn({B}, {S}, {D}, generator=g, dtype=torch.float64, requires_grad=True)
y = torch.cat([torch.arange({N}), torch.randint(0, {N}, ({S - N},), generator=g)])[torch.randperm({S}, generator=g)].expand({B}, {S})
v = torch.randn({B}, {N}, {D}, generator=g, dtype=torch.float64)
W, b = proto_head(z, y, {N})
flows = isinstance(W, torch.Tensor) and isinstance(b, torch.Tensor) and (W.requires_grad or b.requires_grad)
result = {{"flows": flows, "gradient of the head with respect to z_support":
          plain(torch.autograd.grad((W * v).sum() + b.sum(), z)[0]) if flows else None}}
"""


def _flows(got, expected) -> None:
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError("the measurement did not come back")
    if got["flows"] is not True:
        raise AssertionError("W and b must depend on z_support (no detach, no .item()): gradients flow through the head")
    compare(got, expected, name="proto_head", atol=1e-12, rtol=1e-10)


def _shuffled(task: str, seeds: tuple[int, ...]) -> str:
    """``task`` (code building ``task``) relabelled with generators of the given seeds."""
    return PLAIN + f"""from metalib import Task
{task}
outs = [shuffle_labels(task, torch.Generator().manual_seed(s)) for s in {seeds}]
result = {{"in": plain(list(task)), "out": [plain(list(o)) if isinstance(o, tuple) else None for o in outs]}}
"""


CONSISTENT = _shuffled("""g = torch.Generator().manual_seed(0)
ys = torch.arange(5).repeat_interleave(2).expand(6, -1)
yq = torch.arange(5).repeat_interleave(3).expand(6, -1)
task = Task(torch.randn(6, 10, 1, 4, 4, generator=g), ys, torch.randn(6, 15, 1, 4, 4, generator=g), yq)""", (1,))

REPRODUCIBLE = _shuffled("""y = torch.arange(5).expand(40, 5)
task = Task(torch.zeros(40, 5, 1, 2, 2), y, torch.zeros(40, 5, 1, 2, 2), y)""", (3, 3))


def _any_order(seed: int, B: int, N: int, Q: int, again: int) -> str:
    return _shuffled(f"""g = torch.Generator().manual_seed({seed})
ys = torch.stack([torch.randperm({N}, generator=g) for _ in range({B})])      # support in any order
yq = torch.stack([torch.randperm({N}, generator=g).repeat({Q}) for _ in range({B})])
task = Task(torch.randn({B}, {N}, 1, 2, 2, generator=g), ys, torch.randn({B}, {Q * N}, 1, 2, 2, generator=g), yq)""",
                     (again, again, again + 1))


def _outputs(got, expected):
    """The relabelled tasks as (x_support, y_support, x_query, y_query) tensors, and the (trusted) input."""
    import torch

    task = expected["in"]
    outs = got.get("out") if isinstance(got, dict) else None
    if not isinstance(outs, list) or len(outs) != len(expected["out"]):
        raise AssertionError("the relabelled tasks did not come back")
    for out in outs:
        if not isinstance(out, list) or len(out) != 4 or any(type(t) is not torch.Tensor for t in out):
            raise AssertionError("shuffle_labels should return a Task (task._replace(y_support=..., y_query=...))")
        if not (torch.equal(out[0], task[0]) and torch.equal(out[2], task[2])):
            raise AssertionError("images must not change")
        if out[1].shape != task[1].shape or out[3].shape != task[3].shape:
            raise AssertionError("label shapes must not change")
        if out[1].dtype != torch.int64 or out[3].dtype != torch.int64:
            raise AssertionError(f"labels must stay int64 (class indices), got {out[1].dtype}")
    return task, outs


def _permutation_per_task(task, out, n_way: int) -> None:
    for b in range(task[1].shape[0]):
        mapping = {}
        for old, new in zip(task[1][b].tolist() + task[3][b].tolist(), out[1][b].tolist() + out[3][b].tolist()):
            if mapping.setdefault(old, new) != new:
                raise AssertionError(f"task {b}: class {old} got two labels (support and query must agree)")
        if sorted(mapping.values()) != list(range(n_way)):
            raise AssertionError(f"task {b}: new labels {sorted(mapping.values())} are not a permutation of 0..{n_way - 1}")
    if _equal(out[1], task[1]):
        raise AssertionError("every task kept its labels: shuffle them (one random permutation per task)")


def _equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _consistent(got, expected) -> None:
    task, (out,) = _outputs(got, expected)
    _permutation_per_task(task, out, 5)


def _random_and_reproducible(got, expected) -> None:
    task, (a, b) = _outputs(got, expected)
    if not _equal(a[1], b[1]):
        raise AssertionError("the same generator seed must give the same labels")
    distinct = {tuple(r) for r in a[1].tolist()}
    if len(distinct) <= 10:
        raise AssertionError(f"only {len(distinct)} different relabellings in 40 tasks: draw one permutation per task")
    if not (a[1][:, 0] != 0).any():
        raise AssertionError("class 0 always keeps label 0: the labels are not shuffled")


def _any_order_check(got, expected) -> None:
    task, (a, b, c) = _outputs(got, expected)
    n_way = int(task[1].max()) + 1
    _permutation_per_task(task, a, n_way)
    if not _equal(a[1], b[1]) or not _equal(a[3], b[3]):
        raise AssertionError("the same generator seed must give the same labels")
    if _equal(a[1], c[1]):
        raise AssertionError("another generator seed gave the same labels: draw the permutations from the generator")


STEP_HAND = PLAIN + """params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
grads = {"w": torch.tensor([0.5, -1.0]), "b": torch.tensor([2.0])}
rates = {"w": torch.tensor([0.1, 0.2]), "b": torch.tensor([-0.5])}
new = metasgd_step(params, grads, rates)
result = {"new": plain(new) if isinstance(new, dict) else None, "params after the call": plain(params)}
"""

STEP_GRADIENT = PLAIN + """g = torch.tensor([0.5, -1.0, 3.0], requires_grad=True)
rate = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
new = metasgd_step({"w": torch.zeros(3)}, {"w": g}, {"w": rate})
w = new.get("w") if isinstance(new, dict) else None
flows = isinstance(w, torch.Tensor) and w.requires_grad
d = torch.autograd.grad(w.sum(), [rate, g], allow_unused=True) if flows else (None, None)
result = {"flows": flows, "d/d rate": plain(d[0]), "d/d gradient": plain(d[1])}
"""


def _step_random(seed: int, shapes: dict) -> str:
    return PLAIN + f"""gen = torch.Generator().manual_seed({seed})
shapes = {shapes!r}
draw = lambda s: torch.randn(s, generator=gen, dtype=torch.float64)
params, grads, rates = ({{n: draw(s) for n, s in shapes.items()}} for _ in range(3))
new = metasgd_step(params, grads, rates)
result = plain(new) if isinstance(new, dict) else None
"""


def _step_keys_and_values(got, expected) -> None:
    import torch

    if not isinstance(got, dict):
        raise AssertionError("metasgd_step should return a dict: parameter name -> new tensor")
    if set(got) != set(expected):
        raise AssertionError(f"keys {sorted(got)}, expected {sorted(expected)}: one entry per parameter")
    for n, e in expected.items():
        if type(got[n]) is torch.Tensor and got[n].dtype != e.dtype:
            raise AssertionError(f"{n}: keep the parameters' dtype ({e.dtype}), got {got[n].dtype}")
        compare(got[n], e, name=f"{n} = θ − α ⊙ g (one rate per element)", atol=1e-12, rtol=1e-10)


def _step_hand(got, expected) -> None:
    if not isinstance(got, dict) or got.get("new") is None:
        raise AssertionError("metasgd_step should return a dict: parameter name -> new tensor")
    _step_keys_and_values(got["new"], expected["new"])
    compare(got["params after the call"], expected["params after the call"],
            name="params after the call (metasgd_step must not change its inputs)", atol=0, rtol=0)


def _step_flows(got, expected) -> None:
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError("the measurement did not come back")
    if got["flows"] is not True:
        raise AssertionError("the new parameters must depend on the rates: tensor operations, no .detach()")
    for key, should in (("d/d rate", "−g"), ("d/d gradient", "−α")):
        if got[key] is None:
            raise AssertionError(f"the result must depend on the rates and on the gradients ({key} is missing)")
        compare(got[key], expected[key], name=f"{key} of θ − α ⊙ g (should be {should})", atol=1e-6, rtol=1e-6)


def make_probes(rng: random.Random) -> list[Probe]:
    def seed():
        return rng.randrange(10**6)

    N = rng.randint(3, 8)
    return [
        # q1: ProtoNet's head as a linear layer
        Probe("q1", "proto_head_hand_computed", False, HAND, atol=1e-6, rtol=1e-5),
        Probe("q1", "proto_head_gives_the_protonet_softmax", False, _softmax(0, 3, 4, 2, 6, 5), atol=1e-4, rtol=1e-4),
        Probe("q1", "proto_head_float64_unequal_counts", True,
              _float64(seed(), rng.randint(1, 3), N + rng.randint(3, 12), N, rng.randint(8, 40)), check=_keeps_float64),
        Probe("q1", "proto_head_other_softmax", True,
              _softmax(seed(), rng.randint(1, 4), rng.randint(2, 10), rng.randint(1, 5), rng.randint(3, 9), rng.randint(3, 16)),
              atol=1e-4, rtol=1e-4),
        Probe("q1", "proto_head_passes_gradients_to_the_embeddings", True,
              _gradient(seed(), rng.randint(1, 4), N + rng.randint(1, 8), N, rng.randint(3, 10)), check=_flows),
        # q1b: Meta-SGD's inner step
        Probe("q1b", "metasgd_step_hand_computed_and_inputs_unchanged", False, STEP_HAND, check=_step_hand),
        Probe("q1b", "metasgd_step_is_differentiable_in_rates_and_gradients", False, STEP_GRADIENT, check=_step_flows),
        Probe("q1b", "metasgd_step_many_tensors_float64", True,
              _step_random(seed(), {f"layers.{2 * i}.{kind}": ((rng.randint(2, 9), rng.randint(1, 9)) if kind == "weight"
                                                               else (rng.randint(2, 9),))
                                    for i in range(rng.randint(2, 4)) for kind in ("weight", "bias")}),
              check=_step_keys_and_values),
        # q2: which rows answer a 20-way task (a prediction)
        Probe("q2", "any_way_is_a_set_of_row_names", False, choice_probe("any_way_rows"), check=is_choice(ROWS, "row names")),
        Probe("q2", "any_way_is_right", True, choice_probe("any_way_rows"), check=right_choice(
            lambda answer, right: "not quite: look at which learners end in a layer with a fixed number of outputs")),
        # q3: one random relabelling per task
        Probe("q3", "shuffle_labels_is_a_consistent_permutation_per_task", False, CONSISTENT, check=_consistent),
        Probe("q3", "shuffle_labels_is_random_per_task_and_reproducible", False, REPRODUCIBLE,
              check=_random_and_reproducible),
        Probe("q3", "shuffle_labels_any_order_and_many_ways", True,
              _any_order(seed(), rng.randint(3, 6), rng.randint(12, 25), rng.randint(1, 3), seed()), check=_any_order_check),
    ]


def references() -> dict:
    import torch

    from ... import maml, protomaml

    def shuffle_labels(task, generator):  # one permutation per task, applied to support and query
        perms = torch.stack([torch.randperm(int(task.y_support.max()) + 1, generator=generator)
                             for _ in range(task.y_support.shape[0])])
        rows = torch.arange(perms.shape[0])[:, None]
        return task._replace(y_support=perms[rows, task.y_support], y_query=perms[rows, task.y_query])

    return {"proto_head": protomaml.proto_head, "any_way_rows": lambda: {"finetune", "matching", "protonet", "protomaml"},
            "shuffle_labels": shuffle_labels, "metasgd_step": maml.sgd_step}


JUDGE = Judge("09_choosing_a_meta_learner", make_probes, references,
              guarded={"metalib.protomaml": ("proto_head",), "metalib.maml": ("sgd_step",)})
