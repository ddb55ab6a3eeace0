"""Tests of metalib.baselines: pixel nearest neighbour, train-from-scratch, pre-train + fine-tune."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from metalib import Conv4, Task, TrainConfig
from metalib.baselines import (FinetuneConfig, PretrainConfig, ScratchConfig, finetune_predict,
                               pixel_nearest_neighbour, pretrain_classifier, train_from_scratch)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one intra-op thread avoids OpenMP overhead (and stalls when the CPUs are busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pattern_task(B=3, N=4, K=2, Q=3, seed=0) -> Task:
    """Each class is a random binary pattern; its images are the pattern plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(B, N, 1, 1, 28, 28, generator=g) > 0.7).float()

    def draw(n):
        x = patterns.expand(B, N, n, 1, 28, 28) + 0.1 * torch.rand(B, N, n, 1, 28, 28, generator=g)
        return x.reshape(B, N * n, 1, 28, 28), torch.arange(N).repeat_interleave(n).repeat(B, 1)
    (xs, ys), (xq, yq) = draw(K), draw(Q)
    return Task(xs, ys, xq, yq)


def _random_task(B=3, N=4, K=2, Q=3, H=28, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N)
    return Task(torch.rand(B, N * K, 1, H, H, generator=g), labels.repeat_interleave(K).repeat(B, 1),
                torch.rand(B, N * Q, 1, H, H, generator=g), labels.repeat_interleave(Q).repeat(B, 1))


# ----------------------------------------------------------------------------- pixel nearest neighbour

def test_pixel_nearest_neighbour_matches_loop():
    task = _random_task(B=3, N=4, K=2, Q=3, H=6)
    # shuffle the support labels so that "nearest index" and "nearest label" differ
    g = torch.Generator().manual_seed(1)
    task = task._replace(y_support=torch.stack([y[torch.randperm(len(y), generator=g)] for y in task.y_support]))
    pred = pixel_nearest_neighbour(task)
    assert pred.shape == task.y_query.shape and pred.dtype == torch.int64
    for b in range(task.batch_size):
        for q in range(task.x_query.shape[1]):
            best, best_d = None, float("inf")
            for s in range(task.x_support.shape[1]):
                d = sum((float(u) - float(v)) ** 2
                        for u, v in zip(task.x_query[b, q].flatten(), task.x_support[b, s].flatten()))
                if d < best_d:
                    best, best_d = s, d
            assert int(pred[b, q]) == int(task.y_support[b, best]), (b, q)


def test_pixel_nearest_neighbour_exact_copies():
    task = _random_task(B=4, N=5, K=1, Q=3)
    N, K, Q = 5, 1, 3
    # every query is a copy of one of its class's support images (support images of one class differ)
    xq = task.x_support.repeat_interleave(Q, dim=1)  # (B, N*Q, 1, H, W), class-major like y_query
    perfect = task._replace(x_query=xq + 0.0)
    pred = pixel_nearest_neighbour(perfect)
    assert torch.equal(pred, perfect.y_query)
    assert (pred == perfect.y_query).float().mean() == 1.0


# ----------------------------------------------------------------------------- fine-tuning a head

def _head_reference(backbone: Conv4, task: Task, steps: int, lr: float) -> torch.Tensor:
    """One linear head per task, trained alone with Adam on the mean cross-entropy of its support set."""
    n_way = int(task.y_support.max()) + 1
    out = []
    backbone.eval()
    for b in range(task.batch_size):
        with torch.no_grad():
            fs, fq = backbone.embed(task.x_support[b]), backbone.embed(task.x_query[b])
        w = torch.zeros(fs.shape[-1], n_way, requires_grad=True)
        bias = torch.zeros(n_way, requires_grad=True)
        opt = torch.optim.Adam([w, bias], lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(fs @ w + bias, task.y_support[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        out.append((fq @ w + bias).detach())
    return torch.stack(out)


def test_finetune_head_matches_per_task_reference():
    torch.manual_seed(0)
    backbone = Conv4(hidden=8)
    task = _pattern_task(B=3, N=4, K=2, Q=3)
    cfg = FinetuneConfig(steps=25, lr=1e-2, mode="head")
    logits = finetune_predict(backbone, task, cfg)
    assert logits.shape == (3, 12, 4)
    assert not logits.requires_grad
    expected = _head_reference(backbone, task, cfg.steps, cfg.lr)
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()
    assert logits.abs().max() > 1e-3  # the heads moved away from their zero init
    # the heads are independent: changing task 0 leaves the logits of tasks 1 and 2 alone
    other = task._replace(x_support=torch.cat([task.x_support[:1].flip(-1), task.x_support[1:]]))
    changed = finetune_predict(backbone, other, cfg)
    assert not torch.allclose(changed[0], logits[0], atol=1e-6)
    assert torch.allclose(changed[1:], logits[1:], atol=1e-5)


def test_finetune_all_leaves_backbone_untouched():
    torch.manual_seed(0)
    backbone = Conv4(hidden=8, n_classes=7)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    task = _random_task(B=2, N=3, K=2, Q=2)
    logits = finetune_predict(backbone, task, FinetuneConfig(steps=2, mode="all"))
    assert logits.shape == (2, 6, 3)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert backbone.head.out_features == 7


def test_finetune_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        finetune_predict(Conv4(hidden=8), _random_task(B=1, N=2, K=1, Q=1), FinetuneConfig(mode="backbone"))


# ----------------------------------------------------------------------------- train from scratch

def _zeros_vs_ones(B=2, K=3, Q=4) -> Task:
    def make(n):
        x = torch.cat([torch.zeros(B, n, 1, 28, 28), torch.ones(B, n, 1, 28, 28)], 1)
        return x, torch.arange(2).repeat_interleave(n).expand(B, -1).contiguous()
    (xs, ys), (xq, yq) = make(K), make(Q)
    return Task(xs, ys, xq, yq)


def test_train_from_scratch_beats_chance_on_easy_task():
    task = _zeros_vs_ones()
    logits = train_from_scratch(task, ScratchConfig(steps=30, hidden=8), seed=0)
    assert logits.shape == (2, 8, 2)
    assert torch.isfinite(logits).all()
    acc = (logits.argmax(-1) == task.y_query).float().mean().item()
    assert acc >= 0.9, acc


def _scratch_reference(task: Task, cfg: ScratchConfig, seed: int) -> torch.Tensor:
    """B BatchNorm-free Conv-4 nets made in order after ``torch.manual_seed(seed)``, each trained alone."""
    n_way = int(task.y_support.max()) + 1
    torch.manual_seed(seed)
    nets = [Conv4(hidden=cfg.hidden, n_classes=n_way, batch_norm=False) for _ in range(task.batch_size)]
    out = []
    for b, net in enumerate(nets):
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            loss = F.cross_entropy(net(task.x_support[b]), task.y_support[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out.append(net(task.x_query[b]))
    return torch.stack(out)


def test_train_from_scratch_matches_per_task_loop():
    """The vectorised training equals training each task's network alone."""
    task = _random_task(B=3, N=3, K=2, Q=2)
    cfg = ScratchConfig(steps=5, hidden=8, lr=3e-3)
    logits = train_from_scratch(task, cfg, seed=5)
    assert logits.shape == (3, 6, 3)
    expected = _scratch_reference(task, cfg, seed=5)
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()


def test_train_from_scratch_seeding():
    task = _random_task(B=2, N=3, K=1, Q=2)
    cfg = ScratchConfig(steps=2, hidden=8)
    a = train_from_scratch(task, cfg, seed=5)
    assert torch.equal(a, train_from_scratch(task, cfg, seed=5))
    assert not torch.allclose(a, train_from_scratch(task, cfg, seed=9))


# ----------------------------------------------------------------------------- pre-training

def test_pretrain_classifier_tiny():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 4, 28, 28), generator=g, dtype=torch.uint8)
    cfg = dataclasses.replace(PretrainConfig(), train=TrainConfig(steps=4, meta_batch=8, lr=1e-3, eval_every=0),
                              hidden=8)
    net, history = pretrain_classifier(images, cfg, seed=0, progress=False)
    assert isinstance(net, Conv4)
    assert net.head is not None and net.head.out_features == 6
    assert net.head.in_features == 8
    assert [r["step"] for r in history.train] == [1, 2, 3, 4]
    assert all("acc" in r and 0.0 <= r["acc"] <= 1.0 for r in history.train)
    net.eval()
    assert net(images[:2, 0].unsqueeze(1).float() / 255).shape == (2, 6)
    # the same seed gives the same network
    net2, _ = pretrain_classifier(images, cfg, seed=0, progress=False)
    for (k, v), v2 in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(v, v2), k


def test_save_and_load_backbone(tmp_path):
    from metalib.baselines import load_backbone, save_backbone
    torch.manual_seed(0)
    net = Conv4(hidden=8, n_classes=5)
    net.train()
    net(torch.rand(6, 1, 28, 28))  # give BatchNorm non-trivial running statistics
    path = tmp_path / "backbone.pt"
    save_backbone(net, path, accuracy=0.5)
    loaded, meta = load_backbone(path)
    assert meta["hidden"] == 8 and meta["accuracy"] == 0.5
    assert loaded.head is None and not loaded.training
    x = torch.rand(3, 1, 28, 28)
    net.eval()
    assert torch.equal(loaded(x), net.embed(x))
