"""Prototypical Networks and Matching Networks (metalib.protonet, metalib.matching, metalib.metric_train).

Every vectorised computation is checked against an explicit Python loop, and on a 2-class example
small enough to do by hand.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from metalib.matching import FullContextEmbedding, MatchingNet, attention, attention_logits, label_log_probs
from metalib.checkpoint import checkpoint_dir
from metalib.metric_train import (EXPERIMENTS, MetricConfig, build_model, evaluate_model, load_metric, save_metric,
                                  train_metric)
from metalib.protonet import ProtoNet, prototypes, similarity_logits
from metalib.tasks import EpisodeSampler, Task
from metalib.train import TrainConfig


@pytest.fixture(scope="module")
def vinyals_small():
    """100 train and 20 val classes of the Vinyals split: enough to see learning in 40 steps."""
    import metalib
    from metalib.data.splits import ClassSplit
    data = metalib.load_omniglot(download=False, progress=False)
    parts = [metalib.omniglot_split(data, "vinyals", p) for p in ("train", "val")]
    return [ClassSplit(s.images[:n], s.class_names[:n], s.char_index[:n], s.name) for s, n in zip(parts, (100, 20))]


def _embedded(seed=0, B=3, N=4, K=2, M=5, D=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, N * K, D, generator=g, dtype=dtype)
    ys = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(B)])  # shuffled labels
    zq = torch.randn(B, M, D, generator=g, dtype=dtype)
    return zs, ys, zq


def test_prototypes_equal_a_loop_over_tasks_and_classes():
    zs, ys, _ = _embedded()
    got = prototypes(zs, ys, 4)
    for b in range(zs.shape[0]):
        for n in range(4):
            torch.testing.assert_close(got[b, n], zs[b][ys[b] == n].mean(0))
    torch.testing.assert_close(prototypes(zs[0], ys[0], 4), got[0])  # unbatched


def test_logits_equal_a_loop():
    zs, ys, zq = _embedded(1)
    protos = prototypes(zs, ys, 4)
    euc, dot = similarity_logits(zq, protos, "euclidean"), similarity_logits(zq, protos, "dot")
    for b in range(zq.shape[0]):
        for m in range(zq.shape[1]):
            for n in range(4):
                torch.testing.assert_close(euc[b, m, n], -((zq[b, m] - protos[b, n]) ** 2).sum())
                torch.testing.assert_close(dot[b, m, n], zq[b, m] @ protos[b, n])


def test_two_class_example_by_hand():
    # support: class 0 at (0,0) and (2,0) -> prototype (1,0); class 1 at (0,2) -> prototype (0,2)
    zs = torch.tensor([[[0., 0.], [2., 0.], [0., 2.]]])
    ys = torch.tensor([[0, 0, 1]])
    zq = torch.tensor([[[1., 1.]]])
    protos = prototypes(zs, ys, 2)
    assert protos.tolist() == [[[1., 0.], [0., 2.]]]
    assert similarity_logits(zq, protos, "euclidean").tolist() == [[[-1., -2.]]]  # -|(0,1)|^2, -|(1,-1)|^2
    assert similarity_logits(zq, protos, "dot").tolist() == [[[1., 2.]]]  # the two rules disagree here
    # Matching Nets, dot kernel: scores 0, 2, 2 -> p(class 0) = (1 + e^2) / (1 + 2 e^2)
    p = label_log_probs(attention_logits(zq, zs, "dot"), ys, 2).exp()
    e2 = math.exp(2)
    torch.testing.assert_close(p[0, 0], torch.tensor([(1 + e2) / (1 + 2 * e2), e2 / (1 + 2 * e2)]))


def test_bad_inputs_say_what_is_wrong():
    zs, ys, zq = _embedded()
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        prototypes(zs, ys, 3)
    with pytest.raises(ValueError, match="no support example"):
        prototypes(zs[:, :1], ys[:, :1] * 0, 2)
    with pytest.raises(ValueError, match="similarity must be one of"):
        similarity_logits(zq, zs, "cosine")
    with pytest.raises(ValueError, match="kernel must be one of"):
        attention(zq, zs, "euclid")
    with pytest.raises(ValueError, match="float images"):
        ProtoNet().embed(torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="matching supports similarity"):
        MetricConfig("matching", similarity="euclidean")
    with pytest.raises(ValueError, match="has no support example"):
        label_log_probs(torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]]), 3)
    assert MetricConfig("matching").similarity == "cosine" and MetricConfig().similarity == "euclidean"
    with pytest.raises(ValueError, match="fce"):
        MetricConfig("protonet", fce=True)


@pytest.mark.parametrize("kernel", ["cosine", "dot"])
def test_matching_probabilities_equal_the_attention_weighted_label_sum(kernel):
    zs, ys, zq = _embedded(2)
    a = attention(zq, zs, kernel)  # (B, M, S)
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2], dtype=a.dtype))
    logp = label_log_probs(attention_logits(zq, zs, kernel), ys, 4)
    for b in range(zq.shape[0]):
        for m in range(zq.shape[1]):
            sims = torch.stack([F.cosine_similarity(zq[b, m], s, dim=0) if kernel == "cosine" else zq[b, m] @ s
                                for s in zs[b]])
            w = sims.softmax(0)
            p = torch.stack([w[ys[b] == n].sum() for n in range(4)])
            torch.testing.assert_close(logp[b, m].exp(), p)


def test_label_log_probs_do_not_underflow():
    scores = torch.tensor([[[0., -2000., -3000.]]])  # softmax weights 1, 0, 0 in float32
    logp = label_log_probs(scores, torch.tensor([[0, 1, 2]]), 3)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp[0, 0, 1], torch.tensor(-2000.0))


def _task(seed=0, B=2, N=3, K=2, Q=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N * (K + Q), 1, 28, 28, generator=g)
    y_s, y_q = torch.arange(N).repeat_interleave(K), torch.arange(N).repeat_interleave(Q)
    return Task(x[:, :N * K], y_s.expand(B, -1), x[:, N * K:], y_q.expand(B, -1))


@pytest.mark.parametrize("fce", [False, True])
def test_models_batch_equals_per_task_and_support_order(fce):
    torch.manual_seed(0)
    task = _task()
    for model in (ProtoNet(hidden=8), ProtoNet("dot", hidden=8, separate_support=True),
                  MatchingNet("cosine", hidden=8, fce=fce)):
        model.eval()
        with torch.no_grad():
            out = model(task)
            per_task = torch.cat([model(task.select(slice(b, b + 1))) for b in range(task.batch_size)])
            perm = torch.randperm(task.x_support.shape[1])
            shuffled = model(Task(task.x_support[:, perm], task.y_support[:, perm], task.x_query, task.y_query))
        assert out.shape == (2, 6, 3)
        torch.testing.assert_close(out, per_task, atol=1e-5, rtol=1e-5)
        if isinstance(model, MatchingNet) and fce:  # the BiLSTM reads the support set in order
            assert not torch.allclose(out, shuffled, atol=1e-4)
        else:  # class means and attention sums ignore the order
            torch.testing.assert_close(out, shuffled, atol=1e-5, rtol=1e-5)


def test_within_alphabet_sampler_draws_every_class_of_a_task_from_one_group():
    images = torch.zeros(10, 20, 28, 28, dtype=torch.uint8)
    from metalib.data.splits import ClassSplit
    split = ClassSplit(images, tuple(map(str, range(10))), torch.arange(10), "toy")
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    sampler = EpisodeSampler(split, 3, 1, 1, groups=groups, seed=0)
    _, classes = sampler.sample_with_classes(400)
    g = groups[classes]  # (B, 3)
    assert (g == g[:, :1]).all()
    assert set(g[:, 0].tolist()) == {0, 1, 2}
    assert set(EpisodeSampler(split, 4, 1, 1, groups=groups).sample_with_classes(50)[1].flatten().tolist()) == {3, 4, 5, 6}
    with pytest.raises(ValueError, match="no group has n_way=5"):
        EpisodeSampler(split, 5, 1, 1, groups=groups)
    with pytest.raises(ValueError, match="one id per class"):
        EpisodeSampler(split, 3, 1, 1, groups=groups[:5])


@pytest.mark.parametrize("method,similarity", [("protonet", "euclidean"), ("matching", "cosine")])
def test_training_learns_and_checkpoint_round_trips(tmp_path, method, similarity, vinyals_small):
    train, val = vinyals_small
    cfg = MetricConfig(method, 5, 1, 3, similarity=similarity, hidden=16, val_ways=5, val_episodes=10,
                       train=TrainConfig(steps=40, meta_batch=2, lr=3e-3, eval_every=20))
    model, history = train_metric(cfg, train, val, progress=False, checkpoint=tmp_path / "m.pt", command="test")
    first, last = [sum(r["loss"] for r in history.train[s]) / 10 for s in (slice(0, 10), slice(-10, None))]
    assert last < first, (first, last)
    assert len(history.val) == 2 and history.val[-1]["time"] > 0
    loaded, meta = load_metric(tmp_path / "m.pt")
    assert meta["command"] == "test" and meta["config"]["method"] == method
    x = val.images[:4, 0].float().div(255).unsqueeze(1)  # (4, 1, 28, 28) in [0, 1]
    torch.testing.assert_close(loaded.embed(x), model.eval().embed(x))
    sampler = EpisodeSampler(val, 5, 1, 2)
    a, b = evaluate_model(model, sampler, episodes=20, progress=False), evaluate_model(loaded, sampler, episodes=20,
                                                                                         progress=False)
    assert a == b


def test_load_refuses_other_checkpoints(tmp_path):
    from metalib.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "x.pt", {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="not written by metalib.metric_train.save_metric"):
        load_metric(tmp_path / "x.pt")
    save_metric(build_model(MetricConfig(hidden=8)), MetricConfig(hidden=8), tmp_path / "p.pt")
    assert isinstance(load_metric(tmp_path / "p.pt")[0], ProtoNet)


def test_within_alphabet_training_draws_each_episode_from_one_alphabet(monkeypatch, vinyals_small):
    recorded = []
    original = EpisodeSampler.sample_with_classes

    def spy(self, batch_size, generator=None):
        task, classes = original(self, batch_size, generator)
        recorded.append(None if self.groups is None else self.groups[classes])  # (B, N) alphabet ids
        return task, classes

    monkeypatch.setattr(EpisodeSampler, "sample_with_classes", spy)
    cfg = MetricConfig("protonet", 5, 1, 2, hidden=8, split="lake", rotations=True, within_alphabet=True,
                       val_episodes=0, train=TrainConfig(steps=3, meta_batch=2, eval_every=0))
    train_metric(cfg, device="cpu", progress=False)
    assert len(recorded) == 3 and all(g is not None and bool((g == g[:, :1]).all()) for g in recorded)
    with pytest.raises(ValueError, match="within_alphabet"):
        train_metric(cfg, *vinyals_small, progress=False)


def test_augment_distorts_every_training_episode(monkeypatch, vinyals_small):
    import metalib.augment as augment

    seen = []
    original = augment.augment_task

    def spy(task, generator, *a, **kw):
        out = original(task, generator, *a, **kw)
        seen.append(bool((out.x_support != task.x_support).any()) and out.y_query is task.y_query)
        return out

    monkeypatch.setattr(augment, "augment_task", spy)
    cfg = MetricConfig("protonet", 5, 1, 2, hidden=8, val_episodes=0, augment=True,
                       train=TrainConfig(steps=3, meta_batch=2, eval_every=0))
    train_metric(cfg, *vinyals_small, progress=False)
    assert seen == [True, True, True]
    train_metric(dataclasses.replace(cfg, augment=False), *vinyals_small, progress=False)
    assert len(seen) == 3  # no distortion without the flag


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if (checkpoint_dir() / f"{n}.pt").is_file()])
def test_shipped_metric_checkpoints_load_with_their_command_and_embed(name):
    model, meta = load_metric(name, "cpu")
    assert f"--retrain {name}" in meta["command"] and "20w1s" in meta["test"]
    cfg = MetricConfig.from_dict(meta["config"])
    assert model.embed(torch.rand(3, 1, 28, 28)).shape == (3, cfg.hidden * (1 if cfg.final_pool else 9))


def test_image_size_is_checked_and_grows_the_embedding(vinyals_small):
    cfg = MetricConfig("protonet", 5, 1, 2, hidden=8, image_size=32, val_episodes=0,
                       train=TrainConfig(steps=1, meta_batch=1, eval_every=0))
    with pytest.raises(ValueError, match="load_omniglot\\(size=32\\)"):
        from metalib.metric_train import _splits
        _splits(cfg, "cpu", data=type("D", (), {"images": torch.zeros(1, 20, 28, 28)})())
    model = build_model(cfg)
    assert model.embed(torch.rand(3, 1, 32, 32)).shape == (3, 8 * 2 * 2)  # 32 -> 16 -> 8 -> 4 -> 2


def test_final_pool_off_keeps_the_last_map_and_old_checkpoints_still_load(tmp_path):
    cfg = MetricConfig("protonet", 5, 1, 2, hidden=8, final_pool=False)
    model = build_model(cfg)
    assert model.embed(torch.rand(3, 1, 28, 28)).shape == (3, 8 * 3 * 3) == (3, model.f.out_dim)
    pooled = build_model(dataclasses.replace(cfg, final_pool=True))
    pooled.load_state_dict(model.state_dict())  # same parameters: only the last max-pool differs
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(pooled.eval().embed(x), F.max_pool2d(
        model.eval().f.features(x), 2).flatten(1))
    blob_cfg = dataclasses.asdict(EXPERIMENTS["protonet_lake"])
    del blob_cfg["final_pool"]  # checkpoints saved before the option existed
    assert MetricConfig.from_dict(blob_cfg).final_pool is True
    with pytest.raises(ValueError, match="protonet"):
        MetricConfig("matching", final_pool=False)


def test_train_part_trainval_trains_on_the_validation_alphabets_too():
    import metalib
    from metalib.metric_train import _splits

    data = metalib.load_omniglot(download=False, progress=False)
    cfg = MetricConfig("protonet", 5, 1, 2, split="lake")
    train, val, groups = _splits(cfg, "cpu", data=data)
    train_all, val_again, groups_all = _splits(dataclasses.replace(cfg, train_part="trainval"), "cpu", data=data)
    assert set(train_all.char_index.tolist()) == set(train.char_index.tolist()) | set(val.char_index.tolist())
    assert len(torch.unique(groups_all)) == 30 and len(torch.unique(groups)) == 25  # background alphabets
    assert torch.equal(val_again.char_index, val.char_index)
    with pytest.raises(ValueError, match="train_part"):
        MetricConfig(train_part="test")
    blob_cfg = dataclasses.asdict(EXPERIMENTS["protonet_lake"])
    del blob_cfg["train_part"]  # checkpoints saved before the option existed
    assert MetricConfig.from_dict(blob_cfg).train_part == "train"


# ----------------------------------------------------------------------------- the pieces a training run cannot show

def _episode_images(seed=0, B=2, N=3, K=2, Q=2):
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(N).repeat_interleave(K).expand(B, N * K)
    yq = torch.arange(N).repeat_interleave(Q).expand(B, N * Q)
    return Task(torch.rand(B, N * K, 1, 28, 28, generator=g), ys, torch.rand(B, N * Q, 1, 28, 28, generator=g), yq)


def test_matching_net_multiplies_cosines_by_its_learned_scale():
    torch.manual_seed(0)
    task = _episode_images()
    for scale in (10.0, 3.0):
        model = MatchingNet("cosine", hidden=8, scale=scale)
        with torch.no_grad():
            model.log_scale.fill_(math.log(scale * 1.7))  # as if training had moved it
        cos = F.cosine_similarity(model.embed(task.x_query)[:, :, None], model.embed_support(task.x_support)[:, None], dim=-1)
        expected = label_log_probs(scale * 1.7 * cos, task.y_support, 3)  # (B, M, N)
        torch.testing.assert_close(model(task), expected, atol=1e-5, rtol=1e-5)
    model(task).sum().backward()
    assert model.log_scale.grad is not None and model.log_scale.grad.abs() > 0, "the scale must be learned"
    plain = MatchingNet("cosine", hidden=8, scale=None)
    assert plain.log_scale is None
    cos = F.cosine_similarity(plain.embed(task.x_query)[:, :, None], plain.embed_support(task.x_support)[:, None], dim=-1)
    torch.testing.assert_close(plain(task), label_log_probs(cos, task.y_support, 3), atol=1e-5, rtol=1e-5)


def test_full_context_embeddings_against_a_loop_with_their_skip_connections():
    """g(x_i, S) = forward + backward BiLSTM states + g'(x_i); f(x, S): h = LSTM step + f'(x), read r = attention
    over g. Recomputed one example at a time with the module's own LSTM cells."""
    torch.manual_seed(1)
    D, S, M, steps = 5, 4, 3, 3
    fce = FullContextEmbedding(D, steps)
    zs, zq = torch.randn(2, S, D), torch.randn(2, M, D)
    lstm = fce.support_lstm
    fwd_cell, bwd_cell = torch.nn.LSTMCell(D, D), torch.nn.LSTMCell(D, D)
    with torch.no_grad():
        for cell, sfx in ((fwd_cell, ""), (bwd_cell, "_reverse")):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, kind).copy_(getattr(lstm, f"{kind}_l0{sfx}"))
    g_ref = torch.zeros(2, S, D)
    for b in range(2):
        state, fwd = None, []
        for i in range(S):
            state = fwd_cell(zs[b, i:i + 1], state)
            fwd.append(state[0][0])
        state, bwd = None, [None] * S
        for i in reversed(range(S)):
            state = bwd_cell(zs[b, i:i + 1], state)
            bwd[i] = state[0][0]
        for i in range(S):
            g_ref[b, i] = zs[b, i] + fwd[i] + bwd[i]
    g = fce.support(zs)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-5)
    f = fce.query(zq, g)
    for b in range(2):
        for m in range(M):
            x = zq[b, m:m + 1]
            h, c, r = torch.zeros(1, D), torch.zeros(1, D), torch.zeros(1, D)
            for _ in range(steps):
                h_hat, c = fce.query_cell(x, (h + r, c))
                h = h_hat + x
                r = (h @ g[b].T).softmax(-1) @ g[b]
            torch.testing.assert_close(f[b, m], h[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cosine_decay", [True, False])
def test_learning_rate_follows_the_cosine_schedule(monkeypatch, vinyals_small, cosine_decay):
    import metalib.metric_train as mt
    seen, original = [], mt.meta_train

    def spy(model, step_loss, sample, cfg, **kw):
        opt = kw["optimizer"]

        def recording(task):
            seen.append(opt.param_groups[0]["lr"])
            return step_loss(task)
        return original(model, recording, sample, cfg, **kw)
    monkeypatch.setattr(mt, "meta_train", spy)
    train, _ = vinyals_small
    cfg = MetricConfig("matching", 5, 1, 1, hidden=8, val_episodes=0, cosine_decay=cosine_decay,
                       train=TrainConfig(steps=4, meta_batch=1, lr=1e-2, eval_every=0))
    mt.train_metric(cfg, train, None, progress=False)
    want = [1e-2 * (0.5 * (1 + math.cos(math.pi * s / 4)) if cosine_decay else 1) for s in range(4)]
    assert seen == pytest.approx(want), f"learning rate per step {seen}, expected {want}"


def test_lake_within_alphabet_test_sampler_draws_each_episode_from_one_alphabet():
    """Lake et al.'s 20-way 1-shot runs: all classes of an episode from one evaluation alphabet, one query each."""
    import metalib
    from metalib import metric_train as mt
    data = metalib.load_omniglot(download=False, progress=False)
    sampler = mt.test_sampler(20, 1, split="lake", within_alphabet=True, device="cpu", data=data)
    assert sampler.groups is not None, "the within-alphabet sampler must know each class's alphabet"
    test = metalib.omniglot_split(data, "lake", "test")
    _, classes = sampler.sample_with_classes(6, torch.Generator().manual_seed(0))  # (6, 20)
    alphabets = data.alphabet[test.char_index][classes]
    assert (alphabets == alphabets[:, :1]).all(), f"episodes mix alphabets: {alphabets.tolist()}"
    assert sampler.n_query == 1
    mixed = mt.test_sampler(20, 1, split="lake", device="cpu", data=data)
    _, classes = mixed.sample_with_classes(6, torch.Generator().manual_seed(0))
    assert (data.alphabet[test.char_index][classes] != data.alphabet[test.char_index][classes][:, :1]).any()
