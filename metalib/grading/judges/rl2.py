"""Judge of notebook 07 (meta-RL with RL²), checked outside the student's process.

Public probes use the public tests' inputs; hidden ones draw their bandits, grids, seeds, sizes and
numbers of tasks when grading starts. Expected values come from `metalib.rl.baselines` and
`metalib.rl.rl2.rollout` in the grader's process. The notebook's own
experiments use both, so they are guarded, not hidden: they raise only while the probes run (`guard`).
A policy that counts its steps (its hidden state) or records its inputs runs in the sandbox; what it
saw comes back as plain data.
"""
from __future__ import annotations

import math
import random

from ..judge import Judge, Probe, compare
from .common import PLAIN, choice_probe, is_choice, right_choice

HEAD = PLAIN + """from metalib.rl.envs import BernoulliBandit, GridNavi
from metalib.rl.rl2 import RL2Policy

class StepCounter(RL2Policy):  # hidden state = steps since the last reset
    def forward(self, h, x):
        self.seen.append(int(h[0, 0]))
        return torch.zeros(h.shape[0], self.n_actions), torch.zeros(h.shape[0]), h + 1

class Recorder(RL2Policy):
    def forward(self, h, x):
        self.inputs.append(x)
        return super().forward(h, x)
"""


def _bayes(ns: tuple[int, ...]) -> str:
    return PLAIN + f"result = [float(bayes_value_two_arms(n)) for n in {ns}]\n"


def _counts(ns: tuple[int, ...]) -> str:
    return PLAIN + f"result = {{'n': {list(ns)}, 'count': [plain(count_states(n)) for n in {ns}]}}\n"


def _count_is_an_int(got, expected) -> None:
    c = got.get("count") if isinstance(got, dict) else None
    if not isinstance(c, list) or len(c) != 3:
        raise AssertionError("the answers did not come back")
    if type(c[0]) is not int:
        raise AssertionError(f"count_states(2) should be a Python int, got {type(c[0]).__name__}")
    if c[1] != 1:
        raise AssertionError("with n = 0 only the start state (0, 0, 0, 0) exists")
    if type(c[2]) is not int or not c[0] > c[2] > 1:
        raise AssertionError("more pulls allow more count states")


def _count_values(got, expected) -> None:
    c = got.get("count") if isinstance(got, dict) else None
    if not isinstance(c, list) or len(c) != len(expected["n"]):
        raise AssertionError("the answers did not come back")
    for n, got_n, want in zip(expected["n"], c, expected["count"]):
        if type(got_n) is not int:
            raise AssertionError(f"count_states({n}) should be a Python int, got {type(got_n).__name__}")
        if n > 0 and got_n == math.comb(n + 3, 3) != want:
            raise AssertionError("count the states with s1 + f1 + s2 + f2 <= n, not only == n")
        if got_n != want:
            raise AssertionError(f"count_states({n}) = {got_n}; the number of (s1, f1, s2, f2) >= 0 with sum <= {n} is {want}")


def _counter(env: str, batches: int, rules=("task", "episode", "never"), seed: int = 0, batch: int = 3) -> str:
    """What a policy whose hidden state counts steps sees under each reset rule."""
    return HEAD + f"""env = {env}
result = {{}}
for rule in {rules}:
    pol = StepCounter(env.obs_dim, env.n_actions, hidden=1)
    pol.seen = []
    g = torch.Generator().manual_seed({seed})
    play_trials(pol, env, [env.sample_tasks({batch}, g) for _ in range({batches})], reset=rule, generator=g)
    result[rule] = list(pol.seen)
"""


def _steps_since_reset(what: str):
    def check(got, expected) -> None:
        if not isinstance(got, dict) or set(got) != set(expected):
            raise AssertionError("the measurement did not come back")
        for rule, want in expected.items():
            if got[rule] != want:
                raise AssertionError(f"{what}, reset={rule!r}: the hidden state should count {want} steps since the "
                                     f"last reset, got {str(got[rule])[:200]}")
    return check


INPUTS = HEAD + """env = GridNavi(episode_len=3, n_episodes=2)
torch.manual_seed(0)
pol = Recorder(env.obs_dim, env.n_actions, hidden=8)
pol.inputs = []
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    r = play_trials(pol, env, [env.sample_tasks(4, g)], reset="task", generator=g)
result = {"rewards": plain(r), "inputs": plain(torch.stack(pol.inputs, 1))}
"""


def _inputs_check(got, expected) -> None:
    """The public test's properties (reward, one-hot action, done flag, start cell), then the values."""
    import torch

    if not isinstance(got, dict) or set(got) != set(expected) or type(got["rewards"]) is not torch.Tensor \
            or type(got["inputs"]) is not torch.Tensor:
        raise AssertionError("the rewards and the policy's inputs did not come back as tensors")
    r, x = got["rewards"], got["inputs"]
    if tuple(r.shape) != (4, 6):
        raise AssertionError(f"rewards should have shape (4, 6), got {tuple(r.shape)}")
    if tuple(x.shape) != tuple(expected["inputs"].shape):
        raise AssertionError(f"the policy's inputs (B, T, 25 cells + 5 actions + reward + done): shape {tuple(x.shape)}, "
                             f"expected {tuple(expected['inputs'].shape)}")
    if not torch.equal(x[:, 1:, 30], r[:, :-1]):
        raise AssertionError("the input at step t must hold the reward of step t-1")
    if not x[:, 1:, 25:30].sum(-1).eq(1).all():
        raise AssertionError("the input must hold the previous action (one-hot)")
    if x[:, :, 31].tolist() != [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]] * 4:
        raise AssertionError("done flag: 1 right after an episode ended")
    if not x[:, 3, 0].eq(1).all():
        raise AssertionError("after an episode ends, the observation is the start cell of the next episode")
    compare(got, expected, name="play_trials", atol=1e-6, rtol=1e-6)


def _episode_inputs(episode_len: int, n_episodes: int, batch: int, seed: int) -> str:
    return HEAD + f"""env = GridNavi(episode_len={episode_len}, n_episodes={n_episodes})
torch.manual_seed({seed})
pol = Recorder(env.obs_dim, env.n_actions, hidden=8)
result = {{}}
for rule in ("episode", "task"):
    pol.inputs = []
    g = torch.Generator().manual_seed({seed + 1})
    with torch.no_grad():
        play_trials(pol, env, [env.sample_tasks({batch}, g)], reset=rule, generator=g)
    result[rule] = plain(torch.stack(pol.inputs, 1))
result["episode_len"] = {episode_len}
"""


def _episode_reset_check(got, expected) -> None:
    """The first input of a new episode: the start cell; under 'episode' nothing else, under 'task' the
    done flag of the episode that ended."""
    import torch

    if not isinstance(got, dict) or set(got) != set(expected) or any(type(got[k]) is not torch.Tensor
                                                                      for k in ("episode", "task")):
        raise AssertionError("the policy's inputs did not come back as tensors")
    L = expected["episode_len"]
    for rule in ("episode", "task"):
        x = got[rule]
        if tuple(x.shape) != tuple(expected[rule].shape):
            raise AssertionError(f"reset={rule!r}: the policy was called {x.shape[1]} times, expected {expected[rule].shape[1]}")
        for t in range(L, x.shape[1], L):  # the first step of every later episode
            if not torch.equal(x[:, t, :25], x[:, 0, :25]):
                raise AssertionError("a new episode starts at the start cell")
            if rule == "episode" and not (x[:, t, 25:] == 0).all():
                raise AssertionError(f"reset='episode': the first input of episode {t // L + 1} still carries the previous "
                                     "episode's last action, reward or done flag; after a reset, build the input as at a "
                                     "task's start")
            if rule == "task" and not x[:, t, 31].eq(1).all():
                raise AssertionError("reset='task': the agent should read the done flag of the episode that ended")
    compare(got, expected, name="the policy's inputs", atol=1e-6, rtol=1e-6)


def _rollouts(env: str, policy_seed: int, hidden: int, batch: int, task_seeds: tuple, play_seed: int, rules: tuple,
              greedy: bool = False) -> str:
    """The rewards of every rule on tasks met one after the other, and the inputs the policy saw (the
    library's rollout, chained, in the grader's process). The inputs matter: an untrained policy
    often earns the same rewards whatever it sees (it never reaches a goal, or always pulls one arm)."""
    return HEAD + f"""env = {env}
torch.manual_seed({policy_seed})
pol = Recorder(env.obs_dim, env.n_actions, hidden={hidden})
tasks = [env.sample_tasks({batch}, torch.Generator().manual_seed(s)) for s in {task_seeds}]
result = {{}}
with torch.no_grad():
    for rule in {rules}:
        pol.inputs = []
        r = play_trials(pol, env, tasks, reset=rule, generator=torch.Generator().manual_seed({play_seed}), greedy={greedy})
        result[rule] = {{"rewards": plain(r), "inputs": plain(torch.stack(pol.inputs, 1)) if pol.inputs else None}}
"""


def make_probes(rng: random.Random) -> list[Probe]:
    def seed():
        return rng.randrange(10**6)

    rules = ("task", "episode", "never")
    grid = f"GridNavi(episode_len={rng.randint(2, 4)}, n_episodes={rng.randint(2, 4)})"
    bandit = f"BernoulliBandit(k={rng.randint(2, 5)}, n={rng.randint(3, 6)})"
    return [
        # q1: the Bayes-optimal value of a two-armed bandit
        Probe("q1", "bayes_small_n", False, _bayes((1, 2)), atol=1e-9, rtol=1e-9),
        Probe("q1", "bayes_n10", False, _bayes((10,)), atol=1e-9, rtol=1e-9),
        Probe("q1", "bayes_zero_and_other_n", True, _bayes((0, rng.randint(11, 20), rng.randint(3, 9))), atol=1e-9, rtol=1e-9),
        # q5: the number of count states
        Probe("q5", "count_states_is_an_int", False, _counts((2, 0, 1)), check=_count_is_an_int),
        Probe("q5", "count_states_values", True, _counts((0, 1, rng.randint(5, 30), rng.randint(31, 80))),
              check=_count_values),
        # q2: play_trials, the reset rules
        Probe("q2", "resets_exactly_when_the_rule_says", False,
              _counter("GridNavi(episode_len=2, n_episodes=3)", 2), check=_steps_since_reset("two tasks of 3 episodes x 2 steps")),
        Probe("q2", "inputs_carry_action_reward_done", False, INPUTS, check=_inputs_check),
        Probe("q2", "matches_the_library_rollout", False,
              _rollouts("GridNavi(episode_len=15, n_episodes=2)", 3, 16, 256, (1, 2), 9, rules), atol=1e-6, rtol=1e-6),
        Probe("q2", "episode_reset_clears_the_input", False, _episode_inputs(3, 3, 4, 0), check=_episode_reset_check),
        Probe("q2", "bandit_resets_exactly_when_the_rule_says", True,
              _counter(bandit, rng.randint(2, 4), seed=seed(), batch=rng.randint(1, 3)), check=_steps_since_reset("bandit")),
        Probe("q2", "grid_resets_exactly_when_the_rule_says", True,
              _counter(grid, rng.randint(2, 3), seed=seed(), batch=rng.randint(1, 3)), check=_steps_since_reset(grid)),
        Probe("q2", "episode_reset_clears_the_input_other_grid", True,
              _episode_inputs(rng.randint(2, 5), rng.randint(2, 4), rng.randint(2, 6), seed()), check=_episode_reset_check),
        Probe("q2", "matches_library_on_bandits_greedy", True,
              _rollouts(bandit, seed(), rng.randint(6, 16), rng.randint(4, 12), (seed(), seed(), seed()), seed(), rules,
                        greedy=True), atol=1e-6, rtol=1e-6),
        Probe("q2", "matches_library_on_other_grids", True,
              _rollouts(f"GridNavi(episode_len={rng.randint(8, 15)}, n_episodes={rng.randint(2, 3)})", seed(),
                        rng.randint(8, 16), 128, (seed(), seed()), seed(), rules), atol=1e-6, rtol=1e-6),
        # q4: which rules play the first episode of a new task best (a prediction)
        Probe("q4", "rules_are_a_set_of_rule_names", False, choice_probe("best_first_episode_rules"),
              check=is_choice(set(rules), "rule names")),
        Probe("q4", "task_and_episode_tie", True, choice_probe("best_first_episode_rules"), check=right_choice(
            lambda answer, right: "under 'never' the first task's memory (its goal) misleads the agent in the new task"
            if "never" in answer else "both 'task' and 'episode' reset at the start of the new task: the hidden state "
                                      "and input are the same, so the first episode is played the same way")),
    ]


def references() -> dict:
    import math

    from ...rl.baselines import bayes_optimal_value
    from ...rl.rl2 import rollout

    def play_trials(policy, env, task_batches, reset="task", generator=None, greedy=False):
        import torch

        h, rewards = None, []
        for tasks in task_batches:
            ro = rollout(policy, env, tasks, reset=reset, generator=generator, h=h, greedy=greedy)
            h = ro.h
            rewards.append(ro.rewards)
        return torch.cat(rewards, 1)

    return {"bayes_value_two_arms": lambda n: bayes_optimal_value(2, n), "count_states": lambda n: math.comb(n + 4, 4),
            "play_trials": play_trials, "best_first_episode_rules": lambda: {"task", "episode"}}


JUDGE = Judge("07_meta_rl_rl2", make_probes, references,
              guarded={"metalib.rl.rl2": ("rollout",), "metalib.rl.baselines": ("bayes_optimal_value",)})
