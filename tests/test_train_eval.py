"""Tests of metalib.train, metalib.checkpoint, metalib.evaluate, metalib.config and metalib.device."""
from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalib
from metalib import (EpisodeSampler, Task, TrainConfig, TrainingDiverged, UnsafeCheckpointError,
                     evaluate_accuracy, load_checkpoint, maybe_quick, meta_train, mean_ci95,
                     query_accuracy, save_checkpoint)
from metalib.data import ClassSplit


# ----------------------------------------------------------------------------- a tiny regression problem

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


def _regression():
    """(model, step_loss, sample): y = x @ TRUE_W^T + 0.3, sampled from a private generator."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    gen = torch.Generator().manual_seed(0)

    def sample(batch: int):
        x = torch.randn(batch, 3, generator=gen)
        return x, x @ TRUE_W.T + 0.3

    def step_loss(batch):
        x, y = batch
        loss = F.mse_loss(model(x), y)
        return loss, {"mae": (model(x) - y).abs().mean().detach()}

    return model, step_loss, sample


def test_meta_train_reduces_loss():
    model, step_loss, sample = _regression()
    history = meta_train(model, step_loss, sample, TrainConfig(steps=150, meta_batch=16, lr=0.05, eval_every=0),
                         progress=False)
    losses = [r["loss"] for r in history.train]
    assert len(losses) == 150
    assert np.mean(losses[-10:]) < 0.01 * losses[0]
    assert torch.allclose(model.weight.detach(), TRUE_W, atol=0.1)
    assert history.stopped == "finished"
    assert all(isinstance(r["mae"], float) for r in history.train)  # metrics stored as floats
    steps, maes = history.series("mae")
    assert steps == list(range(1, 151)) and maes[-1] < maes[0]


@pytest.mark.parametrize("steps,eval_every,expected", [(10, 4, [4, 8, 10]), (10, 5, [5, 10]), (7, 0, [7]),
                                                       (3, 100, [3])])
def test_history_rows(steps, eval_every, expected):
    model, step_loss, sample = _regression()
    modes = []

    def validate():
        modes.append(model.training)
        return {"val_loss": torch.tensor(float(len(modes)))}

    history = meta_train(model, step_loss, sample, TrainConfig(steps=steps, meta_batch=4, eval_every=eval_every),
                         validate=validate, progress=False)
    assert [r["step"] for r in history.train] == list(range(1, steps + 1))
    assert [r["step"] for r in history.val] == expected
    assert [r["val_loss"] for r in history.val] == [float(i) for i in range(1, len(expected) + 1)]
    assert all(set(r) >= {"step", "loss", "time", "mae"} for r in history.train)
    assert all(set(r) >= {"step", "time", "val_loss"} for r in history.val)
    times = [r["time"] for r in history.train]
    assert times == sorted(times)
    assert modes == [False] * len(expected), "validate runs in eval mode"
    assert model.training, "training mode is restored after validation"
    assert history.series("val_loss", "val") == (expected, [float(i) for i in range(1, len(expected) + 1)])
    assert history.to_dict() == {"train": history.train, "val": history.val, "stopped": "finished"}


def test_validate_may_return_a_loss_metric():
    model, step_loss, sample = _regression()
    history = meta_train(model, step_loss, sample, TrainConfig(steps=4, meta_batch=4, eval_every=2),
                         validate=lambda: {"loss": 0.5, "acc": 0.9}, progress=False)
    assert [(r["step"], r["loss"]) for r in history.val] == [(2, 0.5), (4, 0.5)]


def test_meta_batch_is_passed_to_sample():
    model, step_loss, sample = _regression()
    sizes = []
    meta_train(model, step_loss, lambda b: (sizes.append(b), sample(b))[1], TrainConfig(steps=3, meta_batch=7),
               progress=False)
    assert sizes == [7, 7, 7]


def test_custom_optimizer_and_grad_clip():
    model, step_loss, sample = _regression()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    meta_train(model, step_loss, sample, TrainConfig(steps=1, meta_batch=8, grad_clip=0.1), optimizer=opt,
               progress=False)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0.09 < moved.item() <= 0.1 + 1e-6  # SGD(lr=1) moves by exactly the clipped gradient norm


def test_negative_steps():
    model, step_loss, sample = _regression()
    with pytest.raises(ValueError, match="steps"):
        meta_train(model, step_loss, sample, TrainConfig(steps=-1), progress=False)


def test_diverges_with_huge_learning_rate(tmp_path):
    model, step_loss, sample = _regression()
    ckpt = tmp_path / "model.pt"
    cfg = TrainConfig(steps=50, meta_batch=8, lr=1e30, eval_every=0, checkpoint=str(ckpt))
    with pytest.raises(TrainingDiverged) as info:
        meta_train(model, step_loss, sample, cfg, progress=False)
    err = info.value
    msg = str(err)
    step = len(err.history.train) + 1
    assert step < 50
    assert f"at step {step}" in msg
    assert "learning rate" in msg and "lr=1e+30" in msg
    assert err.history.stopped == "diverged"
    assert len(err.history.train) >= 1 and all(math.isfinite(r["loss"]) for r in err.history.train)
    assert isinstance(err, FloatingPointError)
    assert not ckpt.exists(), "a diverged model is not checkpointed"


def test_diverges_on_nan_loss():
    model, step_loss, sample = _regression()
    calls = []

    def nan_at_3(batch):
        calls.append(1)
        loss, metrics = step_loss(batch)
        return (loss * float("nan") if len(calls) == 3 else loss), metrics

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged) as info:
        meta_train(model, nan_at_3, sample, TrainConfig(steps=10, meta_batch=4, lr=1e-3), progress=False)
    err = info.value
    assert "at step 3" in str(err) and "nan" in str(err)
    assert "learning rate" in str(err) and "step 2" in str(err)  # the last finite loss
    assert [r["step"] for r in err.history.train] == [1, 2]
    assert err.history.stopped == "diverged"
    # the NaN loss was not back-propagated into the weights
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_diverges_at_first_step():
    model, _, sample = _regression()
    with pytest.raises(TrainingDiverged, match="at step 1") as info:
        meta_train(model, lambda b: (torch.tensor(float("inf"), requires_grad=True), {}), sample,
                   TrainConfig(steps=3), progress=False)
    assert info.value.history.train == []


def test_keyboard_interrupt_returns_history_and_saves(tmp_path):
    model, step_loss, sample = _regression()
    calls = []

    def interrupt_at_4(batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return step_loss(batch)

    ckpt = tmp_path / "sub" / "interrupted.pt"
    history = meta_train(model, interrupt_at_4, sample, TrainConfig(steps=20, meta_batch=4, checkpoint=str(ckpt)),
                         progress=False)
    assert history.stopped == "interrupted"
    assert [r["step"] for r in history.train] == [1, 2, 3]
    blob = load_checkpoint(ckpt)
    assert blob["meta"]["history"]["stopped"] == "interrupted"
    assert len(blob["meta"]["history"]["train"]) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(blob["state_dict"][k], v)


def test_time_budget_stops_validates_and_saves(tmp_path, monkeypatch):
    """A fake clock (one second per reading): the run stops at the first step past the budget."""
    import metalib.train as train_mod

    clock = iter(range(1000))
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: float(next(clock)))
    model, step_loss, sample = _regression()
    ckpt = tmp_path / "budget.pt"
    cfg = TrainConfig(steps=50, meta_batch=4, eval_every=0, time_budget=3.5, checkpoint=str(ckpt))
    history = meta_train(model, step_loss, sample, cfg, validate=lambda: {"acc": 0.5}, progress=False)
    assert history.stopped == "time budget"
    assert [r["step"] for r in history.train] == [1, 2, 3, 4]  # times 1, 2, 3, 4 s: step 4 passes 3.5 s
    assert [r["step"] for r in history.val] == [4]  # validated once, where it stopped
    assert load_checkpoint(ckpt)["meta"]["history"]["stopped"] == "time budget"
    with pytest.raises(ValueError, match="time_budget"):
        meta_train(model, step_loss, sample, TrainConfig(steps=2, time_budget=-1), progress=False)


def test_checkpoint_restores_identical_weights(tmp_path):
    model, step_loss, sample = _regression()
    ckpt = tmp_path / "final.pt"
    cfg = TrainConfig(steps=5, meta_batch=4, lr=0.01, checkpoint=str(ckpt))
    history = meta_train(model, step_loss, sample, cfg, progress=False)
    blob = load_checkpoint(ckpt)
    assert set(blob) == {"state_dict", "meta"}
    assert blob["meta"]["config"] == dataclasses.asdict(cfg)
    assert blob["meta"]["history"] == history.to_dict()
    fresh = nn.Linear(3, 1)
    fresh.load_state_dict(blob["state_dict"])
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["final.pt"]  # no temp file left over


# ----------------------------------------------------------------------------- checkpoint

class _Custom:
    def __init__(self):
        self.value = 3


@dataclasses.dataclass
class _Meta:
    lr: float = 0.1


def test_save_and_load_roundtrip(tmp_path):
    sd = {"w": torch.randn(3, 2, requires_grad=True), "b": torch.arange(4)}
    path = save_checkpoint(tmp_path / "a" / "ck.pt", sd, config=_Meta(), accuracy=0.5, names=("x", "y"), extra=None)
    assert path == tmp_path / "a" / "ck.pt"
    blob = load_checkpoint(path)
    assert torch.equal(blob["state_dict"]["w"], sd["w"].detach()) and torch.equal(blob["state_dict"]["b"], sd["b"])
    assert blob["meta"] == {"config": {"lr": 0.1}, "accuracy": 0.5, "names": ["x", "y"], "extra": None}


def test_save_refuses_non_plain_meta(tmp_path):
    with pytest.raises(TypeError, match="_Custom"):
        save_checkpoint(tmp_path / "x.pt", {}, thing=_Custom())
    assert not any(tmp_path.iterdir()), "nothing (not even a temp file) is left behind"


def test_failed_save_leaves_no_temp_file(tmp_path):
    (tmp_path / "ck.pt" / "occupied").mkdir(parents=True)  # a non-empty folder where the file should go
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck.pt", {"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.parametrize("payload", [
    lambda: {"state_dict": {"w": torch.zeros(1)}, "meta": {"obj": _Custom()}},
    lambda: {"state_dict": {"w": torch.zeros(1)}, "meta": _Meta()},
    lambda: _Custom(),
], ids=["custom-class", "dataclass", "bare-object"])
def test_load_refuses_pickled_objects(tmp_path, payload):
    path = tmp_path / "unsafe.pt"
    torch.save(payload(), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    assert "refusing to load" in str(info.value) and str(path) in str(info.value)


def test_load_refuses_non_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UnsafeCheckpointError, match="not a metalib checkpoint"):
        load_checkpoint(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint file


def test_load_adds_missing_meta(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["meta"] == {}


# ----------------------------------------------------------------------------- evaluate

def test_mean_ci95_hand_computed():
    mean, ci = mean_ci95(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5; unbiased variance = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    mean, ci = mean_ci95([0.5, 0.5, 0.5])
    assert mean == pytest.approx(0.5) and ci == 0.0
    mean, ci = mean_ci95(torch.tensor([[1.0, 3.0]]))  # flattened
    assert mean == pytest.approx(2.0) and ci == pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))


def test_mean_ci95_edge_cases():
    mean, ci = mean_ci95(torch.tensor([0.7]))
    assert mean == pytest.approx(0.7) and math.isnan(ci)
    with pytest.raises(ValueError):
        mean_ci95(torch.tensor([]))


def test_query_accuracy_logits_and_labels():
    y = torch.tensor([[0, 1, 2, 0], [1, 1, 0, 2]])
    logits = torch.zeros(2, 4, 3)
    pred = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 2]])
    logits.scatter_(2, pred.unsqueeze(-1), 5.0)
    expected = torch.tensor([0.75, 1.0])
    assert torch.allclose(query_accuracy(logits, y), expected)
    assert torch.allclose(query_accuracy(pred, y), expected)
    assert query_accuracy(torch.tensor([[2, 2, 1, 1]]), torch.tensor([[0, 1, 1, 2]])).tolist() == [0.25]
    with pytest.raises(ValueError, match="shape"):
        query_accuracy(torch.zeros(2, 5), y)


@pytest.fixture()
def sampler():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 20, 8, 8), generator=g, dtype=torch.uint8)
    split = ClassSplit(images=images, class_names=tuple(map(str, range(12))), char_index=torch.arange(12),
                       name="synthetic")
    return EpisodeSampler(split, n_way=5, k_shot=1, n_query=3, seed=0)


def test_evaluate_perfect_and_constant(sampler):
    acc = evaluate_accuracy(lambda t: t.y_query, sampler, episodes=20, batch_size=8, progress=False)
    assert isinstance(acc, metalib.Accuracy)
    assert acc.mean == 1.0 and acc.ci95 == 0.0 and acc.episodes == 20
    assert str(acc) == "100.0 ± 0.0% (20 episodes)"
    acc = evaluate_accuracy(lambda t: torch.zeros(t.batch_size, t.x_query.shape[1], 5), sampler, episodes=20,
                            batch_size=8, progress=False)
    assert acc.mean == pytest.approx(1 / 5)  # balanced queries: always label 0 is right 1/N of the time


def test_evaluate_random_predictor_is_at_chance(sampler):
    g = torch.Generator().manual_seed(1)
    acc = evaluate_accuracy(lambda t: torch.randint(0, 5, t.y_query.shape, generator=g), sampler, episodes=600,
                            batch_size=100, progress=False)
    assert 0 < acc.ci95 < 0.05
    assert abs(acc.mean - 0.2) < 3 * acc.ci95


def test_evaluate_batches_and_same_episodes(sampler):
    seen = {1: [], 2: [], 3: []}

    def recorder(key):
        def predict(task):
            seen[key].append(task)
            return task.y_query
        return predict

    state = sampler.generator.get_state()
    evaluate_accuracy(recorder(1), sampler, episodes=7, batch_size=3, seed=5, progress=False)
    evaluate_accuracy(recorder(2), sampler, episodes=7, batch_size=3, seed=5, progress=False)
    evaluate_accuracy(recorder(3), sampler, episodes=7, batch_size=3, seed=6, progress=False)
    assert [t.batch_size for t in seen[1]] == [3, 3, 1]
    for a, b in zip(seen[1], seen[2]):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(seen[1][0].x_support, seen[3][0].x_support)
    assert torch.equal(sampler.generator.get_state(), state), "the sampler's own generator is left untouched"


def test_evaluate_per_episode_accuracy(sampler):
    """The mean is over episodes: wrong on exactly the first episode of each batch -> (n-2)/n."""
    def predict(task):
        pred = task.y_query.clone()
        pred[0] = (pred[0] + 1) % 5
        return pred

    acc = evaluate_accuracy(predict, sampler, episodes=10, batch_size=5, progress=False)
    assert acc.mean == pytest.approx(0.8)


@pytest.mark.parametrize("episodes", [0, -1])
def test_evaluate_bad_episodes(sampler, episodes):
    with pytest.raises(ValueError, match="episodes"):
        evaluate_accuracy(lambda t: t.y_query, sampler, episodes=episodes, progress=False)


# ----------------------------------------------------------------------------- config

def test_maybe_quick_off(monkeypatch):
    monkeypatch.delenv("METALIB_QUICK", raising=False)
    cfg = TrainConfig(steps=500)
    assert maybe_quick(cfg) is cfg
    assert maybe_quick(cfg, steps=2) is cfg
    assert not metalib.is_quick()
    monkeypatch.setenv("METALIB_QUICK", "0")
    assert maybe_quick(cfg) is cfg


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_maybe_quick_on(monkeypatch, value):
    monkeypatch.setenv("METALIB_QUICK", value)
    assert metalib.is_quick()
    cfg = TrainConfig(steps=500, meta_batch=32, eval_every=50, lr=0.3)
    quick = maybe_quick(cfg)
    assert quick == dataclasses.replace(cfg, **cfg.quick_overrides())
    assert (quick.steps, quick.meta_batch, quick.eval_every, quick.lr) == (6, 4, 3, 0.3)
    assert maybe_quick(cfg, steps=2) == dataclasses.replace(cfg, steps=2)  # explicit overrides win
    assert cfg.steps == 500  # the original is untouched


def test_maybe_quick_nested_config(monkeypatch):
    from metalib.baselines import PretrainConfig
    monkeypatch.setenv("METALIB_QUICK", "1")
    quick = maybe_quick(PretrainConfig())
    assert quick.train.steps == 5 and quick.train.meta_batch == 16 and quick.hidden == 64


def test_maybe_quick_unknown_override(monkeypatch):
    monkeypatch.setenv("METALIB_QUICK", "1")
    with pytest.raises(ValueError, match="stpes"):
        maybe_quick(TrainConfig(), stpes=3)

    @dataclasses.dataclass(frozen=True)
    class Bad:
        steps: int = 10

        def quick_overrides(self):
            return {"step": 1}

    with pytest.raises(ValueError, match="'step'"):
        maybe_quick(Bad())


@pytest.mark.parametrize("quick", ["0", "1"])
def test_maybe_quick_non_dataclass(monkeypatch, quick):
    monkeypatch.setenv("METALIB_QUICK", quick)
    with pytest.raises(TypeError, match="dict"):
        maybe_quick({"steps": 3})
    with pytest.raises(TypeError):
        maybe_quick(TrainConfig)  # the class, not an instance


# ----------------------------------------------------------------------------- device

def test_get_device_env_cpu(monkeypatch):
    monkeypatch.setenv("METALIB_DEVICE", "cpu")
    assert metalib.get_device() == torch.device("cpu")
    assert metalib.get_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                (False, True, "mps"), (False, False, "cpu")])
def test_get_device_default_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    """Every availability combination, whatever this machine has (its accelerators are faked)."""
    monkeypatch.delenv("METALIB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert metalib.get_device() == torch.device(expected), f"cuda={cuda}, mps={mps}: expected {expected}"


def test_get_device_default_on_this_machine(monkeypatch):
    monkeypatch.delenv("METALIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert metalib.get_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_get_device_cuda_unavailable(monkeypatch, name):
    monkeypatch.setenv("METALIB_DEVICE", name)
    with pytest.raises(ValueError, match="CUDA is not available"):
        metalib.get_device()


def test_get_device_bad_name(monkeypatch):
    monkeypatch.setenv("METALIB_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="gpu0"):
        metalib.get_device()


def test_get_device_prefer_overrides_env(monkeypatch):
    monkeypatch.setenv("METALIB_DEVICE", "gpu0")
    assert metalib.get_device(torch.device("cpu")) == torch.device("cpu")


def test_seed_everything_reproducible():
    def draw(seed):
        gen = metalib.seed_everything(seed)
        return (random.random(), float(np.random.rand()), torch.rand(3), torch.rand(3, generator=gen))

    a, b, c = draw(11), draw(11), draw(12)
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert a[0] != c[0] and a[1] != c[1] and not torch.equal(a[2], c[2]) and not torch.equal(a[3], c[3])
    assert torch.equal(metalib.make_generator(11).get_state(), metalib.seed_everything(11).get_state())
    metalib.seed_everything(2**40 + 3)  # larger than NumPy's 32-bit seed range: reduced, no error


def test_reserved_metric_names_are_refused():
    model, step_loss, sample = _regression()

    def clashing(batch):
        loss, _ = step_loss(batch)
        return loss, {"step": 1.0}

    with pytest.raises(ValueError, match="reserves"):
        meta_train(model, clashing, sample, TrainConfig(steps=2, meta_batch=4), progress=False)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    import torch
    from metalib import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(100)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(cut)


def test_atomic_save_writes_an_ordinary_readable_file(tmp_path):
    """Not mkstemp's 0600: the sandboxed grader (another user) reads the Omniglot cache."""
    import os
    import stat

    from metalib.checkpoint import atomic_save

    old = os.umask(0o022)
    try:
        path = atomic_save({"x": 1}, tmp_path / "cache.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(tmp_path.glob("*.tmp"))
