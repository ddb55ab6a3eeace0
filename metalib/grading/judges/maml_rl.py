"""Judge of notebook 08 (MAML for reinforcement learning), checked outside the student's process.

Public probes use the public tests' inputs; hidden ones draw their policies, tasks, numbers of
trajectories, step sizes and discounts when grading starts. Expected values come from
`metalib.rl.maml_rl` (``adapt`` with the linear baseline's advantages) in the grader's process.
The notebook trains with it, so ``adapt`` is guarded, not hidden:
it raises only while the probes run (`guard`; ``advantages`` stays: the probes use it). Gradients through the student's
inner step are taken in the sandbox and come back as tensors.
"""
from __future__ import annotations

import math
import random

from ..judge import Judge, Probe, compare
from .common import PLAIN, choice_probe, is_choice, number, right_choice

HEAD = PLAIN + """from metalib.rl.maml_rl import GaussianMLPPolicy, outer_loss, sample_trajectories
from metalib.rl.maml_rl import advantages as _advantages
from metalib.rl.nav2d import Nav2D

def setup(seed, hidden, init_std, B, K, horizon=None):
    env = Nav2D() if horizon is None else Nav2D(horizon=horizon)
    torch.manual_seed(seed)
    pol = GaussianMLPPolicy(hidden=hidden, init_std=init_std).double()
    theta = {n: p.detach().requires_grad_() for n, p in pol.params().items()}
    g = torch.Generator().manual_seed(seed + 1)
    goals = env.sample_tasks(B, g).double()
    return env, pol, theta, goals, g
"""


def _adapted(configs: list[tuple]) -> str:
    """The adapted parameters for each (seed, hidden, init_std, B, K, horizon, lr, gamma)."""
    return HEAD + f"""result = []
for seed, hidden, init_std, B, K, horizon, lr, gamma in {configs!r}:
    env, pol, theta, goals, g = setup(seed, hidden, init_std, B, K, horizon)
    traj = sample_trajectories(pol, theta, env, goals, K, generator=g)
    result.append(plain(inner_step(pol, theta, traj, lr, gamma)))
"""


def _derivative(seed: int, hidden: tuple, init_std: float, B: int, K: int, lr: float, gamma: float) -> str:
    """A fixed random projection of the adapted parameters, differentiated with respect to theta."""
    return HEAD + f"""env, pol, theta, goals, g = setup({seed}, {hidden!r}, {init_std}, {B}, {K})
traj = sample_trajectories(pol, theta, env, goals, {K}, generator=g)
new = inner_step(pol, theta, traj, {lr}, {gamma})
flows = isinstance(new, dict) and all(isinstance(v, torch.Tensor) and v.requires_grad for v in new.values())
d = None
if flows:
    w = {{n: torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(i)) for i, (n, v) in enumerate(new.items())}}
    d = torch.autograd.grad(sum((new[n] * w[n]).sum() for n in w), list(theta.values()))
result = {{"flows": flows, "d(adapted)/d(params)": plain(d)}}
"""


def _flows(got, expected) -> None:
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError("the measurement did not come back")
    if got["flows"] is not True:
        raise AssertionError("the adapted parameters must depend on params (no detach)")
    compare(got["d(adapted)/d(params)"], expected["d(adapted)/d(params)"],
            name="d(adapted)/d(params) (second order: use create_graph=True)", atol=1e-8, rtol=1e-6)


def _meta_gradient(seed: int, hidden: tuple, init_std: float, B: int, K: int, lr: float, gamma: float) -> str:
    """The meta-gradient of the post-update loss through the student's inner step (second order)."""
    return HEAD + f"""env, pol, theta, goals, g = setup({seed}, {hidden!r}, {init_std}, {B}, {K})
traj = sample_trajectories(pol, theta, env, goals, {K}, generator=g)
post = sample_trajectories(pol, theta, env, goals, {K}, generator=g)
loss = outer_loss(pol, inner_step(pol, theta, traj, {lr}, {gamma}), post, _advantages(post, {gamma}, "linear", normalize=False))
result = plain(torch.autograd.grad(loss, list(theta.values())))
"""


def _in_range(got, expected) -> None:
    v = number(got, "stay_at_origin_return()")
    if not -100 * math.sqrt(1 / 6) <= v <= -100 * 0.25:
        raise AssertionError(f"E|g| lies between E|g_x| = 0.25 and sqrt(E|g|^2) = sqrt(1/6), so the return lies in "
                             f"[-40.8, -25]; got {v}")


def _origin_value(got, expected) -> None:
    v = number(got, "stay_at_origin_return()")
    if abs(v + 100 / 6) <= 0.5:
        raise AssertionError("that is -100 E|g|^2: the reward is minus the distance, not its square")
    if abs(v - expected) >= 0.5:
        raise AssertionError(f"{v:.2f} is not it: average -100 |g| over the square [-0.5, 0.5]^2")


def _predictions_hint(answer: set, right: set) -> str:
    if "a" in answer or "b" not in answer:
        return ("before any step no policy knows the goal; the pre-trained policy is the one trained for exactly that "
                "return (MAML's initialisation is trained for the return after the step)")
    return "MAML's initialisation is trained for the return after the inner step, at this alpha"


def make_probes(rng: random.Random) -> list[Probe]:
    def seed():
        return rng.randrange(10**6)

    def hidden():
        return tuple(rng.randint(4, 16) for _ in range(rng.randint(1, 2)))

    other = [(seed(), hidden(), round(rng.uniform(0.3, 1.0), 3), rng.randint(2, 5), rng.randint(2, 6), rng.randint(10, 40),
              round(rng.uniform(0.01, 0.3), 4), round(rng.uniform(0.8, 1.0), 3)) for _ in range(2)]
    return [
        # q2: the return of staying at the origin
        Probe("q2", "stay_at_origin_is_in_the_right_range", False, PLAIN + "result = plain(stay_at_origin_return())\n",
              check=_in_range),
        Probe("q2", "stay_at_origin_value", True, PLAIN + "result = plain(stay_at_origin_return())\n",
              check=_origin_value),  # no inputs to draw
        # q1: the inner policy-gradient step
        Probe("q1", "inner_step_matches_library", False, _adapted([(0, (16, 16), 0.5, 3, 4, None, 0.05, 0.99)]),
              atol=1e-8, rtol=1e-6),
        Probe("q1", "inner_step_is_differentiable", False, _derivative(2, (8, 8), 0.3, 2, 3, 0.1, 0.9), check=_flows),
        Probe("q1", "inner_step_other_seeds_and_sizes", True, _adapted(other), atol=1e-8, rtol=1e-6),
        Probe("q1", "inner_step_second_order_other_seed", True,
              _meta_gradient(seed(), hidden(), round(rng.uniform(0.5, 1.0), 3), rng.randint(2, 4), rng.randint(3, 6),
                             round(rng.uniform(0.01, 0.1), 4), round(rng.uniform(0.9, 1.0), 3)), atol=1e-8, rtol=1e-6),
        Probe("q1", "inner_step_is_differentiable_other_seed", True,
              _derivative(seed(), hidden(), round(rng.uniform(0.2, 0.8), 3), rng.randint(2, 4), rng.randint(2, 5),
                          round(rng.uniform(0.02, 0.3), 4), round(rng.uniform(0.85, 1.0), 3)), check=_flows),
        # q3: which initialisation returns most, before and after the step (a prediction)
        Probe("q3", "predictions_are_a_set_of_letters", False, choice_probe("adaptation_predictions"),
              check=is_choice({"a", "b", "c", "d"}, "letters")),
        Probe("q3", "predictions_right", True, choice_probe("adaptation_predictions"), check=right_choice(_predictions_hint)),
    ]


def references() -> dict:
    from ...rl.maml_rl import adapt, advantages

    def inner_step(policy, params, traj, lr, gamma=0.99):
        return adapt(policy, params, traj, advantages(traj, gamma, "linear", normalize=False), lr)

    def stay_at_origin_return():  # -100 E|g|, g uniform on [-0.5, 0.5]^2
        return -100 * (math.sqrt(2) + math.log(1 + math.sqrt(2))) / 6

    return {"stay_at_origin_return": stay_at_origin_return, "inner_step": inner_step,
            "adaptation_predictions": lambda: {"b", "d"}}


JUDGE = Judge("08_maml_rl", make_probes, references, guarded={"metalib.rl.maml_rl": ("adapt",)})
