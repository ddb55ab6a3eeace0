"""metalib.grading.judges.rl2 (notebook 07's judge): what `make mutants MODULES=grading/ --only
'metalib.grading.judges.rl2.*'` showed untested by the fast grading tests (tests/test_judges.py grades whole
notebooks in sandboxed kernels, far too slow to run per mutant): the hidden draws of `make_probes` (which
generator calls, in which order), each probe's question, visibility, check and tolerances, the probe code's
defaults (rules, seed, batch, greedy), every branch and exact message of the checks (`_count_is_an_int`,
`_count_values`, `_steps_since_reset`, `_inputs_check`, `_episode_reset_check`, the prediction hints) with
their index and tolerance boundaries, and the references (count states, the two-armed Bayes value, the
chained rollouts of ``play_trials``).

Every expected value is written out by hand or computed by a plain loop (count states by enumeration, the
Bayes value by a recursion over posterior counts); nothing starts a kernel or a sandbox.
"""
from __future__ import annotations

import functools
import random
import re

import pytest
import torch

from metalib.grading.judges import common
from metalib.grading.judges import rl2 as j
from judge_fakes import ScriptedRng as _ScriptedRng, fails as _fails  # noqa: E402


# ---------------------------------------------------------------------------- probe code

def test_probe_code_defaults():
    assert j._bayes((1, 2)) == common.PLAIN + "result = [float(bayes_value_two_arms(n)) for n in (1, 2)]\n"
    assert j._counts((2, 0)) == common.PLAIN + "result = {'n': [2, 0], 'count': [plain(count_states(n)) for n in (2, 0)]}\n"
    assert j._counter("ENV", 2) == j.HEAD + (
        "env = ENV\nresult = {}\nfor rule in ('task', 'episode', 'never'):\n"
        "    pol = StepCounter(env.obs_dim, env.n_actions, hidden=1)\n    pol.seen = []\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    play_trials(pol, env, [env.sample_tasks(3, g) for _ in range(2)], reset=rule, generator=g)\n"
        "    result[rule] = list(pol.seen)\n")
    assert j._counter("E", 4, ("never",), seed=5, batch=1) == j.HEAD + (
        "env = E\nresult = {}\nfor rule in ('never',):\n"
        "    pol = StepCounter(env.obs_dim, env.n_actions, hidden=1)\n    pol.seen = []\n"
        "    g = torch.Generator().manual_seed(5)\n"
        "    play_trials(pol, env, [env.sample_tasks(1, g) for _ in range(4)], reset=rule, generator=g)\n"
        "    result[rule] = list(pol.seen)\n")
    r = j._rollouts("ENV", 1, 2, 3, (4, 5), 6, ("task",))
    assert "env = ENV\ntorch.manual_seed(1)\npol = Recorder(env.obs_dim, env.n_actions, hidden=2)\n" in r
    assert "generator=torch.Generator().manual_seed(6), greedy=False)\n" in r
    assert "greedy=True)\n" in j._rollouts("ENV", 1, 2, 3, (4, 5), 6, ("task",), greedy=True)
    e = j._episode_inputs(3, 4, 5, 6)
    assert e.startswith(j.HEAD + "env = GridNavi(episode_len=3, n_episodes=4)\ntorch.manual_seed(6)\n")
    assert "manual_seed(7)" in e and "sample_tasks(5, g)" in e and e.endswith('result["episode_len"] = 3\n')


# ---------------------------------------------------------------------------- make_probes

def test_probes_draw_their_inputs_as_documented():
    values = [3, 4,          # grid: episode_len, n_episodes
              5, 6,          # bandit: k, n
              12, 7,         # bayes: other n
              9, 40,         # count values
              2, 101, 1,     # bandit counter: batches, seed, batch
              3, 102, 2,     # grid counter
              4, 3, 5, 103,  # episode inputs: len, episodes, batch, seed
              104, 7, 8, 105, 106, 107, 108,      # bandit rollouts
              9, 2, 109, 10, 110, 111, 112]       # grid rollouts
    rng = _ScriptedRng(*values)
    probes = j.make_probes(rng)
    assert rng.values == []
    R = ("randrange", 10**6)
    assert rng.calls == [
        ("randint", 2, 4), ("randint", 2, 4), ("randint", 2, 5), ("randint", 3, 6),
        ("randint", 11, 20), ("randint", 3, 9), ("randint", 5, 30), ("randint", 31, 80),
        ("randint", 2, 4), R, ("randint", 1, 3), ("randint", 2, 3), R, ("randint", 1, 3),
        ("randint", 2, 5), ("randint", 2, 4), ("randint", 2, 6), R,
        R, ("randint", 6, 16), ("randint", 4, 12), R, R, R, R,
        ("randint", 8, 15), ("randint", 2, 3), R, ("randint", 8, 16), R, R, R]
    assert [(p.question, p.name, p.hidden) for p in probes] == [
        ("q1", "bayes_small_n", False), ("q1", "bayes_n10", False), ("q1", "bayes_zero_and_other_n", True),
        ("q5", "count_states_is_an_int", False), ("q5", "count_states_values", True),
        ("q2", "resets_exactly_when_the_rule_says", False), ("q2", "inputs_carry_action_reward_done", False),
        ("q2", "matches_the_library_rollout", False), ("q2", "episode_reset_clears_the_input", False),
        ("q2", "bandit_resets_exactly_when_the_rule_says", True), ("q2", "grid_resets_exactly_when_the_rule_says", True),
        ("q2", "episode_reset_clears_the_input_other_grid", True), ("q2", "matches_library_on_bandits_greedy", True),
        ("q2", "matches_library_on_other_grids", True),
        ("q4", "rules_are_a_set_of_rule_names", False), ("q4", "task_and_episode_tie", True)]
    rules = ("task", "episode", "never")
    grid, bandit = "GridNavi(episode_len=3, n_episodes=4)", "BernoulliBandit(k=5, n=6)"
    choice = common.choice_probe("best_first_episode_rules")
    assert [p.code for p in probes] == [
        j._bayes((1, 2)), j._bayes((10,)), j._bayes((0, 12, 7)), j._counts((2, 0, 1)), j._counts((0, 1, 9, 40)),
        j._counter("GridNavi(episode_len=2, n_episodes=3)", 2), j.INPUTS,
        j._rollouts("GridNavi(episode_len=15, n_episodes=2)", 3, 16, 256, (1, 2), 9, rules),
        j._episode_inputs(3, 3, 4, 0),
        j._counter(bandit, 2, seed=101, batch=1), j._counter(grid, 3, seed=102, batch=2),
        j._episode_inputs(4, 3, 5, 103),
        j._rollouts(bandit, 104, 7, 8, (105, 106, 107), 108, rules, greedy=True),
        j._rollouts("GridNavi(episode_len=9, n_episodes=2)", 109, 10, 128, (110, 111), 112, rules),
        choice, choice]
    tol = [(p.atol, p.rtol) for p in probes]
    assert tol == [(1e-9, 1e-9)] * 3 + [(1e-10, 1e-8)] * 4 + [(1e-6, 1e-6)] + [(1e-10, 1e-8)] * 4 + [(1e-6, 1e-6)] * 2 \
        + [(1e-10, 1e-8)] * 2
    checks = [p.check for p in probes]
    assert checks[:3] == [None] * 3 and checks[3] is j._count_is_an_int and checks[4] is j._count_values
    assert checks[6] is j._inputs_check and checks[7] is None and checks[8] is j._episode_reset_check
    assert checks[11] is j._episode_reset_check and checks[12] is None and checks[13] is None
    # the counters' checks name what was played
    for i, what in ((5, "two tasks of 3 episodes x 2 steps"), (9, "bandit"), (10, grid)):
        _fails(checks[i], {"task": [1]}, {"task": [0]},
               f"{what}, reset='task': the hidden state should count [0] steps since the last reset, got [1]")
    # the prediction: a set of rule names; right when 'task' and 'episode'
    right = {"set": True, "items": ["episode", "task"], "repr": ""}
    checks[14](right, right)
    _fails(checks[14], {"set": True, "items": ["always"], "repr": ""}, right,
           "['always'] are not among the options ['episode', 'never', 'task']")
    _fails(checks[14], {"set": False, "items": ["task"], "repr": "['task']"}, right,
           "return a set of rule names, e.g. {'episode'}, got ['task']")
    checks[15](right, right)
    _fails(checks[15], {"set": True, "items": ["never", "task"], "repr": ""}, right,
           "under 'never' the first task's memory (its goal) misleads the agent in the new task")
    _fails(checks[15], {"set": True, "items": ["task"], "repr": ""}, right,
           "both 'task' and 'episode' reset at the start of the new task: the hidden state and input are the same, so "
           "the first episode is played the same way")


def test_judge():
    assert j.JUDGE.assignment == "07_meta_rl_rl2" and len(j.JUDGE.probes(random.Random(1))) == 16
    assert j.JUDGE.guarded == {"metalib.rl.rl2": ("rollout",), "metalib.rl.baselines": ("bayes_optimal_value",)}


# ---------------------------------------------------------------------------- count checks

def test_count_is_an_int():
    for c in ([15, 1, 5], [15, 1, 2], [15, 1, 14]):
        j._count_is_an_int({"count": c}, None)
    gone = "the answers did not come back"
    for got in ([15, 1, 5], {"n": 1}, {"count": (15, 1, 5)}, {"count": [15, 1]}, {"count": [15, 1, 5, 6]}):
        _fails(j._count_is_an_int, got, None, gone)
    _fails(j._count_is_an_int, {"count": [15.0, 1, 5]}, None, "count_states(2) should be a Python int, got float")
    _fails(j._count_is_an_int, {"count": [True, 1, 5]}, None, "count_states(2) should be a Python int, got bool")
    _fails(j._count_is_an_int, {"count": [15, 2, 5]}, None, "with n = 0 only the start state (0, 0, 0, 0) exists")
    _fails(j._count_is_an_int, {"count": [15, 0, 5]}, None, "with n = 0 only the start state (0, 0, 0, 0) exists")
    for c2 in (5.0, 1, 0, 15, 16):
        _fails(j._count_is_an_int, {"count": [15, 1, c2]}, None, "more pulls allow more count states")


def test_count_values():
    exp = {"n": [0, 1, 2], "count": [1, 5, 15]}
    j._count_values({"count": [1, 5, 15]}, exp)
    for got in ([1, 5, 15], {"n": 1}, {"count": (1, 5, 15)}, {"count": [1, 5]}, {"count": [1, 5, 15, 35]}):
        _fails(j._count_values, got, exp, "the answers did not come back")
    _fails(j._count_values, {"count": [1, 5.0, 15]}, exp, "count_states(1) should be a Python int, got float")
    _fails(j._count_values, {"count": [1, 5, True]}, exp, "count_states(2) should be a Python int, got bool")
    eq_n = "count the states with s1 + f1 + s2 + f2 <= n, not only == n"
    _fails(j._count_values, {"count": [1, 4, 15]}, exp, eq_n)      # C(4, 3) = 4: only sum == 1
    _fails(j._count_values, {"count": [1, 5, 10]}, exp, eq_n)      # C(5, 3) = 10
    _fails(j._count_values, {"count": [1, 6, 15]}, exp,
           "count_states(1) = 6; the number of (s1, f1, s2, f2) >= 0 with sum <= 1 is 5")
    # n = 0 is never the "== n" mistake, even when the expected value differs from C(3, 3) = 1
    _fails(j._count_values, {"count": [1]}, {"n": [0], "count": [7]},
           "count_states(0) = 1; the number of (s1, f1, s2, f2) >= 0 with sum <= 0 is 7")
    # the == n message only when that value is also wrong
    j._count_values({"count": [4]}, {"n": [1], "count": [4]})


def test_steps_since_reset():
    check = j._steps_since_reset("W")
    exp = {"task": [0, 1, 2], "never": [0, 1, 2, 3]}
    check({"task": [0, 1, 2], "never": [0, 1, 2, 3]}, exp)
    for got in ([0], {"task": [0, 1, 2]}, {**exp, "episode": []}):
        _fails(check, got, exp, "the measurement did not come back")
    _fails(check, {"task": [0, 1, 2], "never": [0, 1, 0, 1]}, exp,
           "W, reset='never': the hidden state should count [0, 1, 2, 3] steps since the last reset, got [0, 1, 0, 1]")
    long = list(range(100))
    _fails(check, {"task": long, "never": [0, 1, 2, 3]}, exp,
           "W, reset='task': the hidden state should count [0, 1, 2] steps since the last reset, got " + str(long)[:200])


# ---------------------------------------------------------------------------- _inputs_check

def _inputs():
    """A valid measurement: 4 tasks, 6 steps (2 episodes of 3), inputs of 25 cells + 5 actions + reward + done."""
    g = torch.Generator().manual_seed(0)
    r = torch.rand(4, 6, generator=g, dtype=torch.float64)
    r[:, -1] = 100.0
    x = torch.zeros(4, 6, 32, dtype=torch.float64)
    x[:, :, 7] = 1                       # some cell
    x[:, 0, 7], x[:, 0, 0], x[:, 3, 7], x[:, 3, 0] = 0, 1, 0, 1     # the start cell at each episode's start
    for t in range(1, 6):
        x[:, t, 25 + t % 3] = 1          # the previous action, one-hot: 26 27 25 26 27 (not one per action)
    x[:, 1:, 30] = r[:, :-1]
    x[:, 3, 31] = 1
    x[:, 0, 31] = 0
    return {"rewards": r, "inputs": x}


def test_inputs_check_passes_a_valid_measurement_and_names_each_fault():
    e = _inputs()
    j._inputs_check(_inputs(), e)
    back = "the rewards and the policy's inputs did not come back as tensors"
    for got in ([e], {"rewards": e["rewards"]}, {**e, "x": 1}, {**e, "rewards": e["rewards"].tolist()},
                {**e, "inputs": e["inputs"].tolist()}):
        _fails(j._inputs_check, got, e, back)
    _fails(j._inputs_check, {**e, "rewards": e["rewards"][:, :5]}, e, "rewards should have shape (4, 6), got (4, 5)")
    _fails(j._inputs_check, {**e, "rewards": e["rewards"][:3]}, e, "rewards should have shape (4, 6), got (3, 6)")
    _fails(j._inputs_check, {**e, "inputs": e["inputs"][..., :31]}, e,
           "the policy's inputs (B, T, 25 cells + 5 actions + reward + done): shape (4, 6, 31), expected (4, 6, 32)")
    for t in (1, 5):
        bad = _inputs()
        bad["inputs"][2, t, 30] += 0.5
        _fails(j._inputs_check, bad, e, "the input at step t must hold the reward of step t-1")
    for t, col in ((1, 26), (3, 25), (5, 27)):
        bad = _inputs()
        bad["inputs"][1, t, col] = 0
        _fails(j._inputs_check, bad, e, "the input must hold the previous action (one-hot)")
        bad["inputs"][1, t, col] = 2
        _fails(j._inputs_check, bad, e, "the input must hold the previous action (one-hot)")
    for t, v in ((3, 0), (0, 1), (5, 1)):
        bad = _inputs()
        bad["inputs"][3, t, 31] = v
        _fails(j._inputs_check, bad, e, "done flag: 1 right after an episode ended")
    bad = _inputs()
    bad["inputs"][0, 3, 0] = 0
    _fails(j._inputs_check, bad, e, "after an episode ends, the observation is the start cell of the next episode")
    # then the values: atol 1e-6 (an entry of 0), rtol 1e-6 (the last reward, 100)
    for (b, t, c), size in (((0, 2, 10), 1e-6), ((3, 4, 7), 2e-6)):
        ok, bad = _inputs(), _inputs()
        ok["inputs"][b, t, c] += 0.99 * size
        j._inputs_check(ok, e)
        bad["inputs"][b, t, c] += 1.01 * size
        with pytest.raises(AssertionError, match=re.escape("play_trials['inputs'] differs")):
            j._inputs_check(bad, e)
    ok, bad = _inputs(), _inputs()
    ok["rewards"][1, 5] += 0.99 * (1e-6 + 1e-4)
    j._inputs_check(ok, e)
    bad["rewards"][1, 5] += 1.01 * (1e-6 + 1e-4)
    with pytest.raises(AssertionError, match=re.escape("play_trials['rewards'] differs")):
        j._inputs_check(bad, e)


# ---------------------------------------------------------------------------- _episode_reset_check

def _episodes(L=2, n=3, B=2):
    """Valid inputs under 'episode' and 'task' for n episodes of L steps."""
    T = L * n
    out = {}
    for rule in ("episode", "task"):
        x = torch.zeros(B, T, 32, dtype=torch.float64)
        for t in range(T):
            x[:, t, 0 if t % L == 0 else 9] = 1
            if t > 0 and (rule == "task" or t % L):
                x[:, t, 25] = 1          # the previous action
                x[:, t, 30] = 0.25       # its reward
                x[:, t, 31] = float(t % L == 0)
        out[rule] = x
    out["episode_len"] = L
    return out


def test_episode_reset_check_passes_valid_inputs_and_names_each_fault():
    e = _episodes()
    j._episode_reset_check(_episodes(), e)
    back = "the policy's inputs did not come back as tensors"
    for got in ([e], {"episode": e["episode"], "task": e["task"]}, {**e, "x": 1}, {**e, "episode": e["episode"].tolist()},
                {**e, "task": e["task"].tolist()}):
        _fails(j._episode_reset_check, got, e, back)
    _fails(j._episode_reset_check, {**e, "episode": e["episode"][:, :5]}, e,
           "reset='episode': the policy was called 5 times, expected 6")
    _fails(j._episode_reset_check, {**e, "task": e["task"][:, :4]}, e, "reset='task': the policy was called 4 times, expected 6")
    _fails(j._episode_reset_check, {**e, "task": e["task"][:1]}, e, "reset='task': the policy was called 6 times, expected 6")
    for rule in ("episode", "task"):
        bad = _episodes()
        bad[rule][1, 4, 24] = 1
        _fails(j._episode_reset_check, bad, e, "a new episode starts at the start cell")
    for col, v in ((25, 1), (30, 0.5), (31, 1)):
        bad = _episodes()
        bad["episode"][0, 4, col] = v
        _fails(j._episode_reset_check, bad, e,
               "reset='episode': the first input of episode 3 still carries the previous episode's last action, reward or "
               "done flag; after a reset, build the input as at a task's start")
    bad = _episodes()
    bad["episode"][0, 2, 31] = 1
    with pytest.raises(AssertionError, match="^reset='episode': the first input of episode 2 still"):
        j._episode_reset_check(bad, e)
    bad = _episodes()
    bad["task"][1, 4, 31] = 0
    _fails(j._episode_reset_check, bad, e, "reset='task': the agent should read the done flag of the episode that ended")
    bad = _episodes()
    bad["task"][1, 1, 9] = 0.5                               # not an episode's first step: left to the comparison
    with pytest.raises(AssertionError, match=re.escape("the policy's inputs['task'] differs")):
        j._episode_reset_check(bad, e)
    for key, (b, t, c), size in (("episode", (0, 1, 3), 1e-6), ("task", (1, 3, 9), 2e-6)):
        ok, bad = _episodes(), _episodes()
        ok[key][b, t, c] += 0.99 * size
        j._episode_reset_check(ok, e)
        bad[key][b, t, c] += 1.01 * size
        with pytest.raises(AssertionError, match=re.escape(f"the policy's inputs[{key!r}] differs")):
            j._episode_reset_check(bad, e)


def test_episode_reset_check_reads_the_episode_length():
    e = _episodes(L=3, n=2)
    j._episode_reset_check(_episodes(L=3, n=2), e)
    bad = _episodes(L=3, n=2)
    bad["episode"][0, 3, 30] = 0.5
    with pytest.raises(AssertionError, match="^reset='episode': the first input of episode 2 still"):
        j._episode_reset_check(bad, e)


# ---------------------------------------------------------------------------- references

def test_count_states_counts_tuples_by_enumeration():
    count = j.references()["count_states"]
    for n in range(6):
        want = sum(1 for a in range(n + 1) for b in range(n + 1) for c in range(n + 1) for d in range(n + 1)
                   if a + b + c + d <= n)
        assert count(n) == want and type(count(n)) is int


def test_bayes_value_of_two_arms_by_a_recursion_over_posterior_counts():
    @functools.lru_cache(maxsize=None)
    def v(s1, f1, s2, f2, left):
        if left == 0:
            return 0.0
        best = 0.0
        for arm in (0, 1):
            s, f = ((s1, f1), (s2, f2))[arm]
            p = (s + 1) / (s + f + 2)
            win = (s1 + 1, f1, s2, f2) if arm == 0 else (s1, f1, s2 + 1, f2)
            lose = (s1, f1 + 1, s2, f2) if arm == 0 else (s1, f1, s2, f2 + 1)
            best = max(best, p * (1 + v(*win, left - 1)) + (1 - p) * v(*lose, left - 1))
        return best

    bayes = j.references()["bayes_value_two_arms"]
    for n in (1, 2, 3, 5, 8):
        assert abs(bayes(n) - v(0, 0, 0, 0, n)) < 1e-12, n
    assert j.references()["best_first_episode_rules"]() == {"task", "episode"}


def test_play_trials_chains_the_library_rollouts():
    from metalib.rl.envs import BernoulliBandit, GridNavi
    from metalib.rl.rl2 import RL2Policy, rollout

    env = GridNavi(episode_len=3, n_episodes=2)
    torch.manual_seed(0)
    pol = RL2Policy(env.obs_dim, env.n_actions, hidden=8)
    tasks = [env.sample_tasks(16, torch.Generator().manual_seed(s)) for s in (1, 2)]
    play = j.references()["play_trials"]

    def chained(reset, greedy, seed):
        g, h, out = torch.Generator().manual_seed(seed), None, []
        for t in tasks:
            ro = rollout(pol, env, t, reset=reset, generator=g, h=h, greedy=greedy)
            h = ro.h
            out.append(ro.rewards)
        return torch.cat(out, 1)

    with torch.no_grad():
        for reset in ("never", "episode"):
            got = play(pol, env, tasks, reset=reset, generator=torch.Generator().manual_seed(5), greedy=True)
            assert got.shape == (16, 12)
            torch.testing.assert_close(got, chained(reset, True, 5), rtol=0, atol=0)
        torch.testing.assert_close(play(pol, env, tasks, generator=torch.Generator().manual_seed(3)),
                                   chained("task", False, 3), rtol=0, atol=0)
        # on a bandit, with sampled actions, the hidden state carried from task to task (reset='never') shows in
        # the rewards: starting each task afresh earns other rewards
        env = BernoulliBandit(k=5, n=10)
        torch.manual_seed(1)
        pol = RL2Policy(env.obs_dim, env.n_actions, hidden=8)
        for p in pol.parameters():           # large weights: the actions depend on the hidden state
            p.mul_(4)
        tasks = [env.sample_tasks(256, torch.Generator().manual_seed(s)) for s in (3, 4)]
        got = play(pol, env, tasks, reset="never", generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(got, chained("never", False, 7), rtol=0, atol=0)
        g = torch.Generator().manual_seed(7)
        afresh = torch.cat([rollout(pol, env, t, reset="never", generator=g).rewards for t in tasks], 1)
        assert not torch.equal(got, afresh)
        # the defaults: reset='task', sampled actions
        got = play(pol, env, tasks, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(got, chained("task", False, 7), rtol=0, atol=0)
        assert not torch.equal(got, chained("task", True, 7))
