"""Tests of metalib.blackbox and metalib.blackbox_train (black-box meta-learning, notebook 02).

Every vectorised piece is compared with a plain reference: the sequence builder with a per-task
loop, the query-only loss with a loop over positions, the parallel-query LSTM and transformer
with "one sequence per query", the position accuracy and the nearest-prototype rule with loops.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import metalib
from metalib import Task, checks
from metalib.blackbox import (AttentionLearner, LSTMLearner, attention_mask, build_sequence, query_loss,
                              query_mask)
from metalib.blackbox_train import (BlackBoxConfig, accuracy_by_position, build_learner, checkpoint_name,
                                    load_blackbox, prototype_predict, save_blackbox, train_blackbox)
from metalib.checkpoint import checkpoint_dir
from metalib.data import ClassSplit


def _features(B=3, N=3, K=2, M=4, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(B, N * K, D, generator=g)
    y_s = torch.arange(N).repeat_interleave(K).expand(B, N * K)
    z_q = torch.randn(B, M, D, generator=g)
    return z_s, y_s, z_q, N


def _tiny_split(C=8, seed=0):
    """Classes that differ by a class-specific blob position: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(C, 20, 28, 28, generator=g) * 60).to(torch.uint8)
    for c in range(C):
        r, col = 3 * (c % 4) + 2, 3 * (c // 4) + 2
        images[c, :, r:r + 6, col:col + 6] = 255
    return ClassSplit(images=images, class_names=tuple(map(str, range(C))), char_index=torch.arange(C),
                      name="tiny")


# ----------------------------------------------------------------------------- the input sequence

def test_build_sequence_without_shuffle_is_the_plain_concatenation():
    z_s, y_s, z_q, N = _features()
    seq, y_order = build_sequence(z_s, y_s, z_q, N)
    expected = torch.cat([torch.cat([z_s, F.one_hot(y_s, N).float()], -1),
                          torch.cat([z_q, torch.zeros(*z_q.shape[:2], N)], -1)], 1)
    checks.assert_close(seq, expected, name="sequence")
    assert torch.equal(y_order, y_s)


def test_build_sequence_shuffle_matches_a_per_task_loop():
    z_s, y_s, z_q, N = _features(B=4, N=3, K=2)
    seq, y_order = build_sequence(z_s, y_s, z_q, N, torch.Generator().manual_seed(3))
    perm = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)).argsort(1)  # the documented draw
    for b in range(4):
        for t in range(6):
            i = int(perm[b, t])
            row = torch.cat([z_s[b, i], F.one_hot(y_s[b, i], N).float()])
            checks.assert_close(seq[b, t], row, name=f"task {b} position {t}")
            assert y_order[b, t] == y_s[b, i]
        for j in range(z_q.shape[1]):
            checks.assert_close(seq[b, 6 + j], torch.cat([z_q[b, j], torch.zeros(N)]), name=f"query {j}")
    assert not torch.equal(perm, torch.arange(6).expand(4, 6)), "the draw should change the order"
    assert len({tuple(p.tolist()) for p in perm}) > 1, "each task should get its own order"


def test_build_sequence_rejects_bad_labels_and_shapes():
    z_s, y_s, z_q, N = _features()
    with pytest.raises(ValueError, match="0..1"):
        build_sequence(z_s, y_s, z_q, 2)
    with pytest.raises(ValueError, match="expected"):
        build_sequence(z_s[0], y_s[0], z_q[0], N)


def test_query_mask_and_loss_match_a_loop():
    mask = query_mask(4, 3)
    assert mask.tolist() == [False] * 4 + [True] * 3
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(2, 7, 3, generator=g), torch.randint(0, 3, (2, 7), generator=g)
    expected = torch.stack([F.cross_entropy(logits[b, t:t + 1], targets[b, t:t + 1])
                            for b in range(2) for t in range(4, 7)]).mean()
    checks.assert_close(query_loss(logits, targets, mask), expected, name="query loss")
    with pytest.raises(ValueError, match="no position"):
        query_loss(logits, targets, query_mask(7, 0))


# ----------------------------------------------------------------------------- the learners

def test_attention_mask_matches_the_rule():
    S, M = 3, 2
    blocked = attention_mask(S, M)
    for i in range(S + M):
        for j in range(S + M):
            allowed = j <= i if i < S else (j < S or j == i)
            assert bool(blocked[i, j]) == (not allowed), (i, j)


@pytest.mark.parametrize("cls,kw", [(LSTMLearner, {"layers": 2, "hidden": 16}),
                                    (AttentionLearner, {"d_model": 16, "heads": 2, "layers": 2, "ff": 32})])
def test_parallel_queries_equal_one_sequence_per_query(cls, kw):
    torch.manual_seed(0)
    model = cls(3, encoder="flat", **kw)
    g = torch.Generator().manual_seed(0)
    S, M, D = 6, 4, 784 + 3
    seq = torch.cat([torch.randn(2, S + M, D - 3, generator=g),
                     torch.zeros(2, S + M, 3)], -1)
    seq[:, :S, -3:] = F.one_hot(torch.randint(0, 3, (2, S), generator=g), 3).float()
    out = model.forward_sequence(seq, S)  # (2, S+M, 3)
    for j in range(M):
        alone = model.forward_sequence(seq[:, list(range(S)) + [S + j]], S)  # support + query j
        checks.assert_close(out[:, S + j], alone[:, S], name=f"query {j}", atol=1e-5)
        checks.assert_close(out[:, :S], alone[:, :S], name="support positions", atol=1e-5)
    if cls is LSTMLearner:  # the plain recurrence: the whole sequence support + query j in one call
        for j in range(M):
            h, _ = model.lstm(seq[:, list(range(S)) + [S + j]])
            checks.assert_close(out[:, S + j], model.head(h[:, -1]), name=f"LSTM query {j}", atol=1e-5)


def test_support_positions_are_causal():
    torch.manual_seed(0)
    model = AttentionLearner(2, encoder="flat", d_model=16, heads=2, layers=2, ff=32)
    seq = torch.randn(1, 6, 786)
    changed = seq.clone()
    changed[0, 2] += 1.0
    a, b = model.forward_sequence(seq, 4), model.forward_sequence(changed, 4)
    checks.assert_close(a[:, :2], b[:, :2], name="positions before the change")
    assert not torch.allclose(a[:, 2:], b[:, 2:]), "later positions should see the change"


def test_forward_returns_targets_in_sequence_order():
    model = build_learner(BlackBoxConfig(encoder="flat", n_way=3, hidden=8))
    task = metalib.EpisodeSampler(_tiny_split(), 3, 2, 2, seed=0).sample(4)
    logits, targets = model(task, torch.Generator().manual_seed(0))
    assert logits.shape == (4, 12, 3) and targets.shape == (4, 12)
    assert torch.equal(targets[:, 6:], task.y_query)
    assert torch.equal(targets[:, :6].sort(1).values, task.y_support), "support labels must only be permuted"
    assert model.predict(task).shape == (4, 6, 3)


# ----------------------------------------------------------------------------- training and checkpoints

def test_train_and_checkpoint_round_trip(tmp_path):
    split = _tiny_split()
    cfg = BlackBoxConfig(encoder="flat", n_way=2, hidden=16, val_episodes=10,
                         train=metalib.TrainConfig(steps=4, meta_batch=4, eval_every=2, grad_clip=1.0))
    path = tmp_path / "bb.pt"
    model, history = train_blackbox(cfg, split, split, progress=False, checkpoint=path, command="pytest")
    assert [r["step"] for r in history.val] == [2, 4] and len(history.train) == 4
    assert not model.training, "the trained learner should come back in eval mode"
    loaded, meta = load_blackbox(path)
    assert meta["command"] == "pytest" and meta["config"]["n_way"] == 2 and meta["history"]["val"]
    task = metalib.EpisodeSampler(split, 2, 1, 3, seed=5).sample(4)
    checks.assert_close(loaded.predict(task), model.predict(task), name="reloaded predictions")
    assert checkpoint_name(cfg) == "blackbox_lstm_2w1s.pt"


def test_training_loss_is_taken_on_the_queries_only(monkeypatch):
    """train_blackbox's step loss is the cross-entropy at the query positions, not the support ones."""
    import metalib.blackbox_train as bt
    captured = {}
    monkeypatch.setattr(bt, "meta_train", lambda model, step_loss, sample, cfg, **kw: captured.update(
        model=model, step_loss=step_loss, sample=sample) or metalib.History())
    split = _tiny_split()
    cfg = BlackBoxConfig(encoder="flat", n_way=3, k_shot=2, n_query=4, hidden=8)
    bt.train_blackbox(cfg, split, progress=False)
    task = captured["sample"](5)
    loss, logs = captured["step_loss"](task)
    order = torch.Generator().manual_seed(cfg.train.seed + 1)  # the support orders training uses
    logits, targets = captured["model"](task, order)  # (B, S + M, N)
    S = task.x_support.shape[1]
    expected = F.cross_entropy(logits[:, S:].reshape(-1, 3), targets[:, S:].reshape(-1))
    checks.assert_close(loss, expected, name="training loss (queries only)", atol=1e-6)
    assert not torch.allclose(loss, F.cross_entropy(logits[:, :S].reshape(-1, 3), targets[:, :S].reshape(-1)))
    checks.assert_close(logs["acc"], (logits[:, S:].argmax(-1) == targets[:, S:]).float().mean(), name="accuracy")


def test_lstm_learns_separable_tasks():
    """A learning test in the fast suite (about 6 s): training on the support positions, a broken sequence or a
    broken loss stays near chance (0.5)."""
    split = _tiny_split()
    cfg = BlackBoxConfig(encoder="flat", n_way=2, hidden=32, val_episodes=100,
                         train=metalib.TrainConfig(steps=1000, meta_batch=16, lr=3e-3, eval_every=1000, grad_clip=1.0))
    _, history = train_blackbox(cfg, split, split, progress=False)
    assert history.val[-1]["acc"] > 0.8, f"2-way tasks on separable blobs should be learned, got {history.val}"


def test_config_quick_mode_and_round_trip(monkeypatch):
    cfg = BlackBoxConfig(learner="attention", n_way=5)
    assert BlackBoxConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    monkeypatch.setenv("METALIB_QUICK", "1")
    quick = metalib.maybe_quick(cfg)
    assert quick.train.steps <= 6 and quick.val_episodes <= 8 and quick.n_way == 5
    with pytest.raises(ValueError, match="learner"):
        build_learner(dataclasses.replace(cfg, learner="gru"))


def test_save_blackbox_refuses_unknown_files(tmp_path):
    metalib.save_checkpoint(tmp_path / "x.pt", {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="config"):
        load_blackbox(tmp_path / "x.pt")
    model = build_learner(BlackBoxConfig(encoder="flat", hidden=4))
    save_blackbox(model, BlackBoxConfig(encoder="flat", hidden=4), tmp_path / "y.pt")
    load_blackbox(tmp_path / "y.pt")


# ----------------------------------------------------------------------------- measurements

def test_accuracy_by_position_matches_a_loop():
    split = _tiny_split()
    model = build_learner(BlackBoxConfig(encoder="flat", n_way=3, k_shot=2, hidden=8)).eval()
    sampler = metalib.EpisodeSampler(split, 3, 2, 2, seed=0)
    acc = accuracy_by_position(model, sampler, episodes=30, batch_size=10, seed=4)
    gen = torch.Generator().manual_seed(4)
    correct, count = torch.zeros(6), torch.zeros(6)
    for _ in range(3):
        task = sampler.sample(10, generator=gen)
        logits, targets = model(task, gen)
        for b in range(10):
            for j in range(6):
                y = int(task.y_query[b, j])
                last = max(t for t in range(6) if targets[b, t] == y)
                count[last] += 1
                correct[last] += float(logits[b, 6 + j].argmax() == y)
    checks.assert_close(acc[1:], (correct / count)[1:], name="accuracy by position")
    assert count[0] == 0 and torch.isnan(acc[0]), "with K=2 no class can end at position 0"


def test_prototype_predict_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    task = Task(torch.randn(2, 6, 4, generator=g), torch.tensor([[0, 1, 2, 0, 1, 2]] * 2),
                torch.randn(2, 5, 4, generator=g), torch.zeros(2, 5, dtype=torch.long))
    logits = prototype_predict(torch.nn.Identity(), task, 3)
    for b in range(2):
        for c in range(3):
            proto = task.x_support[b][task.y_support[b] == c].mean(0)
            for j in range(5):
                checks.assert_close(logits[b, j, c], -((task.x_query[b, j] - proto) ** 2).sum(),
                                    name=f"logit task {b} query {j} class {c}", atol=1e-4)


# ----------------------------------------------------------------------------- shipped checkpoints

SHIPPED = sorted(checkpoint_dir().glob("blackbox_*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoints_load_with_their_command(path):
    model, meta = load_blackbox(path)
    assert meta["command"].startswith("python benchmarks/blackbox.py"), meta.get("command")
    assert 0.0 < meta["test_acc"] <= 1.0 and meta["history"]["train"], "metadata should hold the result"
    # the pixel LSTM has 0.47 M float32 parameters (1.9 MB) plus its training history
    assert path.stat().st_size < 2_500_000, f"{path.name} is {path.stat().st_size} bytes; keep checkpoints small"
