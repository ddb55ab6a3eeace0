"""metalib.rl.rl2: behaviour that `make mutants MODULES=rl/rl2.py` showed untested by tests/test_rl2.py:
defaults (replay's reset rule, quick mode, the progress bar), the messages a caller reads, and
details of the A2C loss. References are the documented values, plain loops and hand formulas.
"""
from __future__ import annotations

import pytest
import torch

from metalib import TrainConfig
from metalib.rl import rl2
from metalib.rl.envs import BernoulliBandit, GridNavi
from metalib.rl.rl2 import RL2Config, RL2Policy, replay, rollout, train_rl2


def test_replay_defaults_to_the_task_reset_rule():
    """Replaying a task-reset rollout without naming the rule gives the rollout's log-probabilities."""
    env = BernoulliBandit(3, 5)
    torch.manual_seed(0)
    pol = RL2Policy(env.obs_dim, env.n_actions, 8)
    ro = rollout(pol, env, env.sample_tasks(6, torch.Generator().manual_seed(0)), reset="task",
                 generator=torch.Generator().manual_seed(1))
    logp, values, _ = replay(pol, ro.inputs, ro.actions, env.episode_len)
    torch.testing.assert_close(logp, ro.logp)
    torch.testing.assert_close(values, ro.values)


def test_quick_mode_shrinks_the_recipe_but_keeps_small_settings():
    """Quick mode: hidden <= 32, <= 5 updates of <= 64 trials, validation every 5; smaller values stay."""
    q = RL2Config().quick_overrides()
    assert q == {"hidden": 32, "train": TrainConfig(steps=5, meta_batch=64, lr=1e-2, eval_every=5)}
    small = RL2Config(hidden=8, train=TrainConfig(steps=3, meta_batch=4, lr=0.5, eval_every=0)).quick_overrides()
    assert small == {"hidden": 8, "train": TrainConfig(steps=3, meta_batch=4, lr=0.5, eval_every=5)}


def test_train_rl2_shows_a_progress_bar_by_default(monkeypatch):
    seen = {}

    def fake_meta_train(model, step_loss, sample, cfg, **kw):
        seen.update(kw)
        return "history"

    monkeypatch.setattr(rl2, "meta_train", fake_meta_train)
    policy, history = train_rl2(BernoulliBandit(2, 3), RL2Config(hidden=4))
    assert history == "history" and seen["progress"] is True and seen["desc"] == "RL²"
    assert policy.gru.hidden_size == 4, "the policy is built with the config's hidden size"
    train_rl2(BernoulliBandit(2, 3), RL2Config(hidden=4), progress=False)
    assert seen["progress"] is False


class _RecordingAdam(torch.optim.Adam):
    """Adam that records the learning rate of every step it takes."""
    lrs: list = []

    def step(self, closure=None):
        _RecordingAdam.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("train_reward", ["expected", "sampled"])
def test_train_rl2_wires_its_config_into_every_update(monkeypatch, train_reward):
    """Two updates of a tiny run, with the pieces recorded: the linear learning-rate decay from lr to
    lr * lr_end, the reset rule, the first tasks drawn from a generator seeded by cfg.seed, the learning
    signal p[a] - mean(p) ("expected") or the sampled rewards (None), the generator of the rollouts, and
    the validation calls."""
    env = BernoulliBandit(3, 4)
    cfg = RL2Config(hidden=4, lr_end=0.1, reset="episode", train_reward=train_reward, seed=5,
                    train=TrainConfig(steps=2, meta_batch=8, lr=0.1, eval_every=1))
    calls, signals, generators = [], [], []
    original_rollout, original_loss = rl2.rollout, rl2.a2c_loss

    def rollout_spy(policy, env_, tasks, **kw):
        ro = original_rollout(policy, env_, tasks, **kw)
        calls.append((tasks, kw["reset"], ro))
        generators.append(kw["generator"])
        return ro

    def loss_spy(ro, cfg_, coef, rewards=None):
        signals.append(rewards)
        return original_loss(ro, cfg_, coef, rewards)

    monkeypatch.setattr(rl2, "rollout", rollout_spy)
    monkeypatch.setattr(rl2, "a2c_loss", loss_spy)
    monkeypatch.setattr(torch.optim, "Adam", _RecordingAdam)
    _RecordingAdam.lrs = []
    _, hist = train_rl2(env, cfg, validate=lambda: {"score": 1.5}, progress=False)
    assert _RecordingAdam.lrs == pytest.approx([0.1, 0.01]), "lr decays linearly from lr to lr * lr_end"
    assert [reset for _, reset, _ in calls] == ["episode", "episode"]
    assert isinstance(generators[0], torch.Generator) and generators[1] is generators[0], \
        "actions and rewards come from the run's seeded generator, not the global RNG"
    torch.testing.assert_close(calls[0][0], env.sample_tasks(8, torch.Generator().manual_seed(5)))
    for (tasks, _, ro), signal in zip(calls, signals):
        if train_reward == "sampled":
            assert signal is None
        else:
            p = tasks.gather(1, ro.actions)  # p[a_t], (B, T)
            torch.testing.assert_close(signal, p - tasks.mean(1, keepdim=True))
    assert [v["score"] for v in hist.val] == [1.5, 1.5]


def test_train_reward_messages_name_the_env_and_the_choices():
    with pytest.raises(ValueError, match=r"^train_reward='expected' needs an env with expected_reward \(bandits\); "
                                         r"GridNavi has none: use 'sampled'$"):
        train_rl2(GridNavi(), RL2Config(train_reward="expected"), progress=False)
    with pytest.raises(ValueError, match=r"^train_reward must be 'sampled' or 'expected', got 'mean'$"):
        train_rl2(BernoulliBandit(2, 3), RL2Config(train_reward="mean"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: training and replay on the given device")
def test_training_and_replay_run_on_the_requested_device():
    env = BernoulliBandit(2, 3)
    cfg = RL2Config(hidden=4, train=TrainConfig(steps=2, meta_batch=4, lr=1e-2, eval_every=0))
    pol, _ = train_rl2(env, cfg, device="cuda", progress=False)
    assert pol.pi.weight.device.type == "cuda"
    ro = rollout(pol, env, env.sample_tasks(5, torch.Generator(device="cuda").manual_seed(0), device="cuda"),
                 generator=torch.Generator(device="cuda").manual_seed(1))
    logp, _, _ = replay(pol, ro.inputs, ro.actions, env.episode_len)
    torch.testing.assert_close(logp, ro.logp)


def _gae_by_loop(r, v, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, V_T = 0, element by element."""
    B, T = r.shape
    adv = torch.zeros_like(r)
    for b in range(B):
        for t in range(T):
            for l in range(T - t):
                nxt = v[b, t + l + 1] if t + l + 1 < T else 0.0
                adv[b, t] += (gamma * lam) ** l * (r[b, t + l] + gamma * nxt - v[b, t + l])
    return adv


def test_a2c_loss_by_hand():
    """Scaled values V = value_scale * v, GAE advantages A (by loop), target A + V; the policy term
    -mean(logp * (A - mean A) / (std A + 1e-8)), the value term 0.5 mean(((target - V) / value_scale)^2)
    weighted by value_coef, minus entropy_coef * mean entropy; "return" is the mean total reward."""
    g = torch.Generator().manual_seed(0)
    B, T = 3, 4
    r, v, logp, ent = (torch.randn(B, T, generator=g, dtype=torch.float64) for _ in range(4))
    ro = rl2.Rollout(rewards=r, actions=torch.zeros(B, T, dtype=torch.long), logp=logp, values=v, entropy=ent,
                     h=torch.zeros(B, 2), inputs=torch.zeros(B, T, 1))
    cfg = RL2Config(gamma=0.9, gae_lambda=0.8, value_coef=0.3, value_scale=2.0)
    loss, info = rl2.a2c_loss(ro, cfg, 0.05)
    V = 2.0 * v
    adv = _gae_by_loop(r, V, 0.9, 0.8)
    norm = (adv - adv.mean()) / (adv.std() + 1e-8)
    value_loss = 0.5 * (((adv + V) - V) / 2.0).pow(2).mean()
    want = -(logp * norm).mean() + 0.3 * value_loss - 0.05 * ent.mean()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(info["value_loss"], value_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(info["return"], r.sum(1).mean(), rtol=1e-12, atol=1e-12)


def test_gae_of_one_step_trials_is_reward_minus_value():
    """A trial of one pull (a one-pull bandit): A_0 = r_0 - V_0."""
    r, v = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.25], [0.5]])
    torch.testing.assert_close(rl2.gae(r, v, 0.9, 0.8), r - v)


def test_policy_defaults_to_128_units_and_starts_near_uniform():
    """hidden=128 by default; the policy head is orthogonal with gain 0.01 (every singular value 0.01) and
    a zero bias, so the first actions are close to uniform."""
    pol = RL2Policy(25, 5)
    assert pol.gru.hidden_size == 128 and pol.hidden == 128
    torch.testing.assert_close(torch.linalg.svdvals(pol.pi.weight), torch.full((5,), 0.01))
    assert (pol.pi.bias == 0).all()


def test_sample_action_samples_the_softmax_by_default():
    """Gumbel-max: P(a) = softmax(logits)(a); logits (0, 0, log 4) give actions with probabilities 1/6, 1/6, 2/3."""
    logits = torch.tensor([[0.0, 0.0, 1.3862944]]).expand(40000, 3)
    a = rl2.sample_action(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(a, minlength=3).float() / 40000
    torch.testing.assert_close(freq, torch.tensor([1 / 6, 1 / 6, 2 / 3]), atol=0.01, rtol=0)  # s.e. <= 0.0024
    assert (rl2.sample_action(logits, greedy=True) == 2).all()


def test_rollout_samples_by_default_and_draws_rewards_from_its_generator_only():
    env = BernoulliBandit(3, 6)
    pol = RL2Policy(env.obs_dim, env.n_actions, 8)
    tasks = env.sample_tasks(64, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = rollout(pol, env, tasks, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    b = rollout(pol, env, tasks, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.actions, b.actions)
    assert len(set(a.actions[:, 0].tolist())) > 1, "a near-uniform policy samples different first arms"


def test_episode_reset_clears_the_input_of_one_step_episodes_too():
    """A bandit's episodes are single pulls: under reset="episode" every input is a fresh start (zeros)."""
    env = BernoulliBandit(3, 4)
    pol = RL2Policy(env.obs_dim, env.n_actions, 8)
    x = rollout(pol, env, env.sample_tasks(5, torch.Generator().manual_seed(0)), reset="episode",
                generator=torch.Generator().manual_seed(1)).inputs
    assert (x == 0).all(), x[0]
